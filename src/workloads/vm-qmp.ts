// A minimal client for qemu's machine protocol (QMP) on a unix socket: the
// greeting, capability negotiation, then one command at a time. The VM
// launcher uses it to let a paused VM run once its process is in place
// (`cont`) and to end a VM cleanly (`quit`).
import { connect, type Socket } from 'node:net';
import { SigilError } from '../errors.ts';

const MAX_BUFFERED = 1024 * 1024;

export class QmpConnection {
  readonly #socket: Socket;
  #buffer = '';
  readonly #waiting: ((message: Record<string, unknown>) => void)[] = [];
  #failure: Error | undefined;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      this.#buffer += text;
      if (this.#buffer.length > MAX_BUFFERED) socket.destroy(new Error('QMP: reply too long'));
      for (let end = this.#buffer.indexOf('\n'); end >= 0; end = this.#buffer.indexOf('\n')) {
        const line = this.#buffer.slice(0, end).trim();
        this.#buffer = this.#buffer.slice(end + 1);
        if (line === '') continue;
        const message = JSON.parse(line) as Record<string, unknown>;
        // Asynchronous events interleave with replies; only greetings and replies are awaited.
        if ('event' in message) continue;
        this.#waiting.shift()?.(message);
      }
    });
    const fail = (error: Error): void => {
      this.#failure ??= error;
      for (const waiter of this.#waiting.splice(0)) waiter({ error: { desc: error.message } });
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('QMP: connection closed')));
  }

  /** Connects to `path` and negotiates capabilities. */
  static async open(path: string, timeoutMs: number): Promise<QmpConnection> {
    const socket = connect(path);
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`QMP: no answer within ${timeoutMs} ms`)));
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const connection = new QmpConnection(socket);
    const greeting = await connection.#next();
    if (!('QMP' in greeting)) throw new SigilError('internal', 'QMP: the socket did not greet as qemu');
    await connection.execute('qmp_capabilities');
    return connection;
  }

  #next(): Promise<Record<string, unknown>> {
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  /** Runs `command`; its error reply becomes an internal SigilError. */
  async execute(command: string): Promise<unknown> {
    const reply = this.#next();
    this.#socket.write(`${JSON.stringify({ execute: command })}\n`);
    const message = await reply;
    if ('error' in message) {
      const desc = (message.error as { desc?: unknown }).desc;
      throw new SigilError('internal', `QMP ${command}: ${String(desc)}`);
    }
    return message.return;
  }

  close(): void {
    this.#socket.destroy();
  }
}
