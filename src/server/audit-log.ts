// The audit trail as log lines: every CA operation the authority reports
// (authority/audit.ts) becomes one line at info, with an `audit` field naming
// the action and who did it to what. Events carry no secrets, and the logger
// redacts secret-looking field names besides (logging.ts).
import type { AuditEvent, AuditSink } from '../authority/audit.ts';
import type { Logger } from '../logging.ts';

/** "certificate.issued" → "audit: certificate issued". */
function messageOf(event: AuditEvent): string {
  return `audit: ${event.action.replace('.', ' ')}`;
}

/** The sink that writes each audit event as one info line of `log`. */
export function auditLog(log: Logger): AuditSink {
  return (event) => {
    const { action, notAfter, ...fields } = event;
    log.info(
      { audit: action, ...fields, ...(notAfter ? { notAfter: notAfter.toISOString() } : {}) },
      messageOf(event),
    );
  };
}
