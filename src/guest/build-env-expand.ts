// `${VAR}` and `$VAR` in a RUN command, replaced from the build's ARG and ENV
// values before the shell sees it, with the rules of firebuild-shared's
// env/expand.go (Go's os.Expand): a name the build does not know is left as
// written, for the shell to expand; `${}` and an unclosed `${` are dropped;
// a `$` followed by no name stays a `$`; special one-character names
// ($1, $?, ${*} ...) are names like any other.

const isSpecial = (char: string): boolean => '*#$@!?-0123456789'.includes(char) && char !== '';
const isNameChar = (char: string): boolean => /^[A-Za-z0-9_]$/.test(char);

/** The name at the start of `text` (just after a `$`) and how many characters it takes; name "" with width > 0 is bad syntax. */
function shellName(text: string): { name: string; width: number; braced: boolean } {
  if (text[0] === '{') {
    if (text.length > 2 && isSpecial(text[1]) && text[2] === '}')
      return { name: text[1], width: 3, braced: true };
    const close = text.indexOf('}', 1);
    if (close === 1) return { name: '', width: 2, braced: true };
    if (close < 0) return { name: '', width: 1, braced: true };
    return { name: text.slice(1, close), width: close + 1, braced: true };
  }
  if (isSpecial(text[0])) return { name: text[0], width: 1, braced: false };
  let end = 0;
  while (end < text.length && isNameChar(text[end])) end += 1;
  return { name: text.slice(0, end), width: end, braced: false };
}

/** `command` with the variables `values` knows replaced. */
export function expandBuildEnv(command: string, values: Readonly<Record<string, string>>): string {
  let out = '';
  let copiedUpTo = 0;
  for (let at = 0; at < command.length; at += 1) {
    if (command[at] !== '$' || at + 1 >= command.length) continue;
    out += command.slice(copiedUpTo, at);
    const { name, width, braced } = shellName(command.slice(at + 1));
    if (name === '' && width > 0) {
      // bad syntax: eaten
    } else if (name === '') out += '$';
    else if (Object.hasOwn(values, name)) out += values[name];
    else out += braced ? `\${${name}}` : `$${name}`;
    at += width;
    copiedUpTo = at + 1;
  }
  return out + command.slice(copiedUpTo);
}
