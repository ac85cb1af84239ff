// A workload's cgroup name becomes a directory in every hierarchy, so it must
// be exactly one harmless path segment: nothing that climbs out ("..", "/"),
// hides (a leading "."), breaks a log line (control characters) or grows
// without bound. Anything outside a small alphabet is refused rather than
// escaped, so the name on disk is the name the caller gave.
import { invalid } from '../../errors.ts';

export const MAX_CGROUP_NAME_LENGTH = 64;
const ALLOWED = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this refuses
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** `name` if it is a safe cgroup name, else an invalid_argument naming the problem. */
export function checkCgroupName(name: unknown, what = 'cgroup name'): string {
  if (typeof name !== 'string') throw invalid(`${what}: must be a string, got ${typeof name}`);
  if (name === '') throw invalid(`${what}: must not be empty`);
  if (name.length > MAX_CGROUP_NAME_LENGTH)
    throw invalid(`${what}: is ${name.length} characters, at most ${MAX_CGROUP_NAME_LENGTH}`);
  const shown = JSON.stringify(name);
  if (CONTROL.test(name)) throw invalid(`${what} ${shown}: contains a control character`);
  if (name === '.' || name === '..')
    throw invalid(`${what} ${shown}: is not a name but a relative directory`);
  if (name.includes('/')) throw invalid(`${what} ${shown}: must be one path segment, without "/"`);
  if (!ALLOWED.test(name))
    throw invalid(
      `${what} ${shown}: may hold only letters, digits, ".", "_" and "-", and starts with a letter or digit`,
    );
  return name;
}
