// `sigil completion bash|zsh`: a completion script generated from the
// commander tree, so every command, alias and option is in it and nothing is
// kept by hand. Both scripts share one candidate function written in the
// shell language bash and zsh have in common (case, for, local, $(…)): it
// walks the words typed so far down the command tree, skipping options and
// their values, then offers subcommands, options, an option's choices
// (--key-type, --state, …) or files (--dir, --out, …).
//
//   bash:  source <(sigil completion bash)      (e.g. in ~/.bashrc)
//   zsh:   source <(sigil completion zsh)       (after compinit, e.g. in ~/.zshrc)
import { Argument, type Command, type Option } from 'commander';
import { KEY_TYPES } from '../pki/keys.ts';
import { PATH_OPTIONS } from './flag-values.ts';

export const SHELLS = ['bash', 'zsh'] as const;
export type Shell = (typeof SHELLS)[number];

const FILES = '__files__';

interface Node {
  readonly path: string;
  readonly subcommands: string[];
  readonly options: string[];
  /** Options that take a value, with what to offer for it (words, FILES, or nothing). */
  readonly values: Map<string, string[]>;
}

function valuesOf(option: Option): string[] {
  if (option.argChoices) return [...option.argChoices];
  if (option.long === '--key-type') return [...KEY_TYPES];
  if (option.long && PATH_OPTIONS.has(option.long)) return [FILES];
  return [];
}

function collect(command: Command, path: string, out: Node[]): void {
  const node: Node = { path, subcommands: [], options: ['--help'], values: new Map() };
  for (const option of command.options) {
    const names = [option.long, option.short].filter((name): name is string => name !== undefined);
    node.options.push(...names);
    if (option.required || option.optional) for (const name of names) node.values.set(name, valuesOf(option));
  }
  out.push(node);
  // A first argument with choices (`completion <shell>`) is offered like a subcommand.
  const first = command.registeredArguments[0];
  if (first?.argChoices) node.subcommands.push(...first.argChoices);
  for (const sub of command.commands) {
    if ((sub as Command & { _hidden?: boolean })._hidden) continue;
    for (const name of [sub.name(), ...sub.aliases()]) {
      node.subcommands.push(name);
      collect(sub, path === '' ? name : `${path} ${name}`, out);
    }
  }
}

/** Single-quoted for sh: every name here is plain ASCII, but quote anyway. */
const quote = (text: string): string => `'${text.replaceAll("'", "'\\''")}'`;

function caseTable(name: string, rows: [string, string[]][]): string {
  const lines = rows
    .filter(([, words]) => words.length > 0)
    .map(([key, words]) => `    ${quote(key)}) echo ${quote(words.join(' '))} ;;`);
  return `${name}() {\n  case "$1" in\n${lines.join('\n')}\n  esac\n}`;
}

/** The candidate function both shells share, with the tree as case tables. */
function commonScript(program: Command): string {
  const nodes: Node[] = [];
  collect(program, '', nodes);
  const subcommands = caseTable(
    '__sigil_subcommands',
    nodes.map((node) => [node.path, node.subcommands]),
  );
  const options = caseTable(
    '__sigil_options',
    nodes.map((node) => [node.path, node.options]),
  );
  const takesValue = caseTable(
    '__sigil_value_options',
    nodes.map((node) => [node.path, [...node.values.keys()]]),
  );
  const values = caseTable(
    '__sigil_option_values',
    nodes.flatMap((node) =>
      [...node.values].map(([option, words]): [string, string[]] => [`${node.path}|${option}`, words]),
    ),
  );
  return `${subcommands}

${options}

${takesValue}

${values}

# Words to offer for the last argument, given the words after "sigil"; "${FILES}" means file names.
__sigil_candidates() {
  local path="" pending="" count=$(( $# - 1 )) i=0 word sub
  for word in "$@"; do
    i=$(( i + 1 ))
    [ "$i" -gt "$count" ] && break
    if [ -n "$pending" ]; then pending=""; continue; fi
    case "$word" in
      --*=*) continue ;;
      -*)
        for sub in $(__sigil_value_options "$path"); do
          [ "$sub" = "$word" ] && pending="$word"
        done
        continue ;;
    esac
    for sub in $(__sigil_subcommands "$path"); do
      if [ "$sub" = "$word" ]; then path="\${path:+$path }$word"; break; fi
    done
  done
  if [ -n "$pending" ]; then __sigil_option_values "$path|$pending"; return; fi
  eval "word=\\"\\\${$#}\\""
  case "$word" in
    -*) __sigil_options "$path" ;;
    *) __sigil_subcommands "$path" ;;
  esac
}`;
}

export function completionScript(program: Command, shell: Shell): string {
  const common = commonScript(program);
  if (shell === 'bash') {
    return `# bash completion for sigil: source <(sigil completion bash)
${common}

_sigil() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" words
  words="$(__sigil_candidates "\${COMP_WORDS[@]:1:COMP_CWORD}")"
  if [ "$words" = "${FILES}" ]; then
    COMPREPLY=($(compgen -f -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
  fi
}
complete -o default -o bashdefault -F _sigil sigil
`;
  }
  return `#compdef sigil
# zsh completion for sigil: source <(sigil completion zsh) after compinit,
# or save it as _sigil in a directory on $fpath.
${common}

_sigil() {
  local out
  out="$(__sigil_candidates "\${(@)words[2,CURRENT]}")"
  if [[ "$out" == "${FILES}" ]]; then
    _files
  elif [[ -n "$out" ]]; then
    compadd -- \${=out}
  else
    _files
  fi
}

if [[ "\${funcstack[1]}" == "_sigil" ]]; then
  _sigil "$@"
else
  compdef _sigil sigil
fi
`;
}

export function registerCompletionCommand(program: Command): void {
  program
    .command('completion')
    .description('Print a shell completion script for bash or zsh')
    .addArgument(new Argument('<shell>', 'the shell').choices(SHELLS))
    .addHelpText(
      'after',
      '\nExamples:\n  $ source <(sigil completion bash)          # in ~/.bashrc\n' +
        '  $ source <(sigil completion zsh)           # in ~/.zshrc, after compinit\n',
    )
    .action((shell: Shell) => {
      process.stdout.write(completionScript(program, shell));
    });
}
