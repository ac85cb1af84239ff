// Compiles a Dockerfile into firebuild's build commands (RUN, ADD, COPY) per
// stage plus the final image's configuration, the way firebuild's
// pkg/build/rootfs.go tracks it: ARG, ENV, USER, WORKDIR (relative ones
// joined to the current one) and SHELL are state that every later command
// carries; VOLUME becomes `mkdir -p` plus a volume in the metadata; LABEL,
// EXPOSE, CMD, ENTRYPOINT and STOPSIGNAL only go into the metadata.
// Variables are expanded where Docker expands them (dockerfile-words.ts);
// RUN text is left for the guest, which expands it with the command's Args
// and Env. What cannot be done without Docker is refused with one line
// naming the instruction and its line.
import { posix } from 'node:path';
import { DockerfileParser, type Instruction } from 'dockerfile-ast';
import { invalid } from '../errors.ts';
import {
  type AddCommand,
  type BuildCommand,
  type CopyCommand,
  DEFAULT_SHELL,
  DEFAULT_USER,
  DEFAULT_WORKDIR,
  type ShellValue,
  type UserValue,
  type WorkdirValue,
} from './build-commands.ts';
import type { CompiledDockerfile, CompiledStage, ImageMetadata, StageBase } from './dockerfile-image.ts';
import { expandWord, shellQuote, singleQuote, type VariableLookup } from './dockerfile-words.ts';

/** Larger Dockerfiles are refused before parsing. */
export const MAX_DOCKERFILE_BYTES = 1024 * 1024;

export interface CompileOptions {
  /** `--build-arg` values; they override the defaults of the ARGs that declare them. */
  readonly buildArgs?: Readonly<Record<string, string>>;
  /**
   * The configuration of an image a FROM names (its ENV, WORKDIR, USER, …), which the stage
   * starts from as Docker's would; undefined (the default) starts from firebuild's defaults.
   */
  readonly imageConfig?: (reference: string) => ImageMetadata | undefined;
}

/** Instructions the guest cannot honour without Docker, with the reason given. */
const REFUSED: Readonly<Record<string, string>> = {
  ONBUILD: 'ONBUILD is not supported (it only affects images built FROM this one)',
  HEALTHCHECK: 'HEALTHCHECK is not supported (nothing would run the check)',
};

const STAGE_NAME = /^[a-z][a-z0-9_.-]*$/;
const PORT = /^[0-9]{1,5}(-[0-9]{1,5})?(\/(tcp|udp|sctp))?$/;
const SIGNAL = /^(SIG[A-Z0-9+-]+|[A-Z][A-Z0-9+-]*|[0-9]{1,2})$/;
const REMOTE_SOURCE = /^([a-z][a-z0-9+.-]*:\/\/|git@)/i;

interface StageState {
  readonly name: string;
  readonly index: number;
  readonly from: StageBase;
  readonly args: Map<string, string>;
  readonly env: Map<string, string>;
  user: UserValue;
  workdir: WorkdirValue;
  shell: ShellValue;
  cmd: readonly string[];
  entrypoint: readonly string[];
  /** Docker empties an inherited CMD when the stage sets its own ENTRYPOINT. */
  cmdInherited: boolean;
  readonly labels: Map<string, string>;
  readonly ports: string[];
  readonly volumes: string[];
  stopSignal: string | null;
  readonly commands: BuildCommand[];
}

/** The Dockerfile's stages and its final image configuration; throws invalid(…) naming what it refuses. */
export function compileDockerfile(text: string, options: CompileOptions = {}): CompiledDockerfile {
  if (Buffer.byteLength(text) > MAX_DOCKERFILE_BYTES)
    throw invalid(`Dockerfile: larger than ${MAX_DOCKERFILE_BYTES} bytes`);
  return new Compiler(text, options).compile();
}

class Compiler {
  readonly #text: string;
  readonly #buildArgs: Readonly<Record<string, string>>;
  readonly #imageConfig: (reference: string) => ImageMetadata | undefined;
  readonly #globalArgs = new Map<string, string | undefined>();
  readonly #stages: StageState[] = [];
  #escape = '\\';
  /** Every stage name in the file, to tell "a later stage" from "no such stage". */
  #allStageNames: string[] = [];

  constructor(text: string, options: CompileOptions) {
    this.#text = text;
    this.#buildArgs = options.buildArgs ?? {};
    this.#imageConfig = options.imageConfig ?? (() => undefined);
  }

  compile(): CompiledDockerfile {
    const dockerfile = DockerfileParser.parse(this.#text);
    this.#escape = dockerfile.getEscapeCharacter();
    const instructions = dockerfile.getInstructions();
    if (instructions.length === 0) throw invalid('Dockerfile: empty (no instructions)');
    this.#allStageNames = instructions
      .filter((instruction) => instruction.getKeyword() === 'FROM')
      .map((instruction) => stageNameOf(instruction));
    for (const instruction of instructions) this.#instruction(instruction);
    if (this.#stages.length === 0) throw invalid('Dockerfile: no FROM instruction');
    const stages: CompiledStage[] = this.#stages.map((stage) => ({
      name: stage.name,
      index: stage.index,
      from: stage.from,
      commands: stage.commands,
      metadata: metadataOf(stage),
    }));
    return { stages, metadata: stages[stages.length - 1].metadata };
  }

  #instruction(instruction: Instruction): void {
    const keyword = instruction.getKeyword();
    const line = instruction.getRange().start.line + 1;
    const at = `Dockerfile line ${line}: ${keyword}`;
    if (REFUSED[keyword] !== undefined) throw invalid(`Dockerfile line ${line}: ${REFUSED[keyword]}`);
    const stage = this.#stages[this.#stages.length - 1];
    if (keyword === 'FROM') this.#from(instruction, at);
    else if (stage !== undefined) this.#stageInstruction(stage, instruction, keyword, at);
    else if (keyword === 'ARG') this.#globalArg(instruction, at);
    else throw invalid(`${at}: only ARG may come before the first FROM`);
  }

  #stageInstruction(stage: StageState, instruction: Instruction, keyword: string, at: string): void {
    switch (keyword) {
      case 'ARG':
        this.#arg(stage, instruction, at);
        break;
      case 'ENV':
        this.#env(stage, instruction, at);
        break;
      case 'LABEL':
        this.#label(stage, instruction, at);
        break;
      case 'USER':
        stage.user = {
          OriginalCommand: instruction.toString(),
          Value: this.#wholeArgument(stage, instruction, at),
        };
        break;
      case 'WORKDIR':
        stage.workdir = {
          OriginalCommand: instruction.toString(),
          Value: joinWorkdir(stage.workdir.Value, this.#wholeArgument(stage, instruction, at)),
        };
        break;
      case 'SHELL':
        this.#shell(stage, instruction, at);
        break;
      case 'RUN':
        this.#run(stage, instruction, at);
        break;
      case 'ADD':
      case 'COPY':
        this.#addOrCopy(stage, instruction, at, keyword);
        break;
      case 'VOLUME':
        this.#volume(stage, instruction, at);
        break;
      case 'EXPOSE':
        this.#expose(stage, instruction, at);
        break;
      case 'CMD':
        stage.cmd = this.#commandLine(instruction, at);
        stage.cmdInherited = false;
        break;
      case 'ENTRYPOINT':
        stage.entrypoint = this.#commandLine(instruction, at);
        if (stage.cmdInherited) stage.cmd = [];
        stage.cmdInherited = false;
        break;
      case 'STOPSIGNAL':
        this.#stopSignal(stage, instruction, at);
        break;
      case 'MAINTAINER':
        break; // deprecated by Docker and without effect on the image's behaviour
      default:
        throw invalid(`${at}: unknown instruction`);
    }
  }

  #lookup(stage: StageState): VariableLookup {
    return (name) => stage.env.get(name) ?? stage.args.get(name);
  }

  #expand(raw: string, lookup: VariableLookup, at: string, quotes = true): string {
    return expandWord(raw, lookup, { escape: this.#escape, quotes }, at);
  }

  #globalArg(instruction: Instruction, at: string): void {
    for (const property of propertiesOf(instruction, at)) {
      const name = property.getName();
      const raw = property.getUnescapedValue();
      const value =
        this.#buildArgs[name] ??
        (raw === null ? undefined : this.#expand(raw, (key) => this.#globalArgs.get(key), at));
      this.#globalArgs.set(name, value);
    }
  }

  #arg(stage: StageState, instruction: Instruction, at: string): void {
    for (const property of propertiesOf(instruction, at)) {
      const name = property.getName();
      const raw = property.getUnescapedValue();
      // A bare `ARG NAME` inside a stage takes the global ARG's value, as Docker does.
      const value =
        this.#buildArgs[name] ??
        (raw === null ? this.#globalArgs.get(name) : this.#expand(raw, this.#lookup(stage), at));
      if (value === undefined) stage.args.delete(name);
      else stage.args.set(name, value);
    }
  }

  #env(stage: StageState, instruction: Instruction, at: string): void {
    // Every value of one ENV sees the variables as they were before it (Docker's rule).
    const lookup = this.#lookup(stage);
    const assignments = propertiesOf(instruction, at).map((property) => {
      const raw = property.getUnescapedValue();
      if (raw === null) throw invalid(`${at}: ${property.getName()} has no value`);
      return [property.getName(), this.#expand(raw, lookup, at)] as const;
    });
    for (const [name, value] of assignments) stage.env.set(name, value);
  }

  #label(stage: StageState, instruction: Instruction, at: string): void {
    const lookup = this.#lookup(stage);
    for (const property of propertiesOf(instruction, at)) {
      const raw = property.getUnescapedValue();
      if (raw === null) throw invalid(`${at}: ${property.getName()} has no value`);
      stage.labels.set(property.getName(), this.#expand(raw, lookup, at));
    }
  }

  /** The instruction's whole argument text as one word (USER, WORKDIR, STOPSIGNAL). */
  #wholeArgument(stage: StageState, instruction: Instruction, at: string): string {
    const value = this.#expand((instruction.getArgumentsContent() ?? '').trim(), this.#lookup(stage), at);
    if (value === '') throw invalid(`${at}: needs a value`);
    return value;
  }

  #from(instruction: Instruction, at: string): void {
    refuseFlags(instruction, at, []);
    const words = instruction.getArguments().map((argument) => argument.getValue());
    const named = words.length === 3 && words[1].toLowerCase() === 'as';
    if (words.length !== 1 && !named) throw invalid(`${at}: expected FROM <image> [AS <name>]`);
    const index = this.#stages.length;
    const name = named ? words[2].toLowerCase() : String(index);
    if (named && !STAGE_NAME.test(name))
      throw invalid(`${at}: invalid stage name ${JSON.stringify(words[2])}`);
    if (this.#stages.some((stage) => stage.name === name))
      throw invalid(`${at}: stage name ${JSON.stringify(name)} is used twice`);
    const image = this.#expand(words[0], (key) => this.#globalArgs.get(key), at);
    if (image === '') throw invalid(`${at}: the image is empty after expansion`);
    // Only a named stage can be a base: `FROM 0` names an image, as in Docker.
    const parent = this.#stages.find(
      (stage) => stage.name === image.toLowerCase() && STAGE_NAME.test(stage.name),
    );
    const from: StageBase =
      image.toLowerCase() === 'scratch'
        ? { kind: 'scratch' }
        : parent !== undefined
          ? { kind: 'stage', name: parent.name, index: parent.index }
          : { kind: 'image', reference: image };
    const inherited =
      parent !== undefined
        ? metadataOf(parent)
        : from.kind === 'image'
          ? this.#imageConfig(image)
          : undefined;
    this.#stages.push(newStage(name, index, from, inherited));
  }

  #shell(stage: StageState, instruction: Instruction, at: string): void {
    const shell = jsonArguments(instruction);
    if (shell === null) throw invalid(`${at}: must be written in JSON form, e.g. SHELL ["/bin/bash", "-c"]`);
    if (shell.length === 0) throw invalid(`${at}: needs at least one element`);
    stage.shell = { OriginalCommand: instruction.toString(), Commands: shell };
  }

  #run(stage: StageState, instruction: Instruction, at: string): void {
    refuseFlags(instruction, at, []);
    refuseHeredocs(instruction, at);
    const exec = jsonArguments(instruction);
    const command =
      exec === null ? (instruction.getArgumentsContent() ?? '').trim() : exec.map(shellQuote).join(' ');
    if (command === '') throw invalid(`${at}: needs a command`);
    stage.commands.push({
      kind: 'run',
      command: {
        OriginalCommand: instruction.toString(),
        Args: Object.fromEntries(stage.args),
        Command: command,
        Env: Object.fromEntries(stage.env),
        Shell: stage.shell,
        Workdir: stage.workdir,
        User: stage.user,
      },
    });
  }

  #addOrCopy(stage: StageState, instruction: Instruction, at: string, keyword: 'ADD' | 'COPY'): void {
    const flags = refuseFlags(instruction, at, keyword === 'COPY' ? ['chown', 'from'] : ['chown']);
    refuseHeredocs(instruction, at);
    const lookup = this.#lookup(stage);
    const exec = jsonArguments(instruction);
    const written = exec ?? instruction.getArguments().map((argument) => argument.getValue());
    if (written.length < 2) throw invalid(`${at}: needs a source and a destination`);
    const words = written.map((word) => this.#expand(word, lookup, at, exec === null));
    const target = words[words.length - 1];
    const sources = words.slice(0, -1);
    if (target === '') throw invalid(`${at}: the destination is empty after expansion`);
    if (sources.length > 1 && !target.endsWith('/'))
      throw invalid(`${at}: with more than one source the destination must end with '/'`);
    const chown = flags.get('chown');
    const userFromChown: UserValue | null =
      chown === undefined
        ? null
        : { OriginalCommand: instruction.toString(), Value: this.#expand(chown, lookup, at) };
    if (userFromChown !== null && userFromChown.Value === '') throw invalid(`${at}: --chown needs a user`);
    const fromFlag = flags.get('from');
    const fromStage =
      fromFlag === undefined ? '' : this.#copyFromStage(stage, this.#expand(fromFlag, lookup, at), at);
    sources.forEach((source, position) => {
      if (source === '') throw invalid(`${at}: a source is empty after expansion`);
      if (keyword === 'ADD' && REMOTE_SOURCE.test(source))
        throw invalid(
          `${at}: remote sources are not supported (${JSON.stringify(source)}); download it in a RUN`,
        );
      const add: AddCommand = {
        OriginalCommand: instruction.toString(),
        OriginalSource: written[position],
        Source: source,
        Target: target,
        Workdir: stage.workdir,
        User: stage.user,
        UserFromLocalChown: userFromChown,
      };
      if (keyword === 'ADD') stage.commands.push({ kind: 'add', command: add });
      else stage.commands.push({ kind: 'copy', command: { ...add, Stage: fromStage } satisfies CopyCommand });
    });
  }

  /** The name of the earlier stage `--from=` names (by name or index). */
  #copyFromStage(stage: StageState, reference: string, at: string): string {
    const wanted = reference.toLowerCase();
    const earlier = /^[0-9]+$/.test(wanted)
      ? this.#stages[Number(wanted)]
      : this.#stages.find((candidate) => candidate.name === wanted);
    if (earlier !== undefined && earlier.index < stage.index) return earlier.name;
    const later =
      earlier !== undefined ||
      (/^[0-9]+$/.test(wanted)
        ? Number(wanted) < this.#allStageNames.length
        : this.#allStageNames.includes(wanted));
    if (later)
      throw invalid(
        `${at}: --from=${reference} names this or a later stage; only earlier stages can be copied from`,
      );
    throw invalid(`${at}: --from=${reference} names no stage of this Dockerfile (images are not supported)`);
  }

  #volume(stage: StageState, instruction: Instruction, at: string): void {
    const lookup = this.#lookup(stage);
    const exec = jsonArguments(instruction);
    const written = exec ?? instruction.getArguments().map((argument) => argument.getValue());
    if (written.length === 0) throw invalid(`${at}: needs a path`);
    for (const word of written) {
      const expanded = this.#expand(word, lookup, at, exec === null);
      if (expanded === '') throw invalid(`${at}: a path is empty after expansion`);
      const volume = joinWorkdir(stage.workdir.Value, expanded);
      if (!stage.volumes.includes(volume)) stage.volumes.push(volume);
      // As firebuild: the directory is made by a RUN. As root, so that a USER set earlier cannot make it fail.
      const command = `mkdir -p ${singleQuote(volume)}`;
      stage.commands.push({
        kind: 'run',
        command: {
          OriginalCommand: `RUN ${command}`,
          Args: {},
          Command: command,
          Env: {},
          Shell: { OriginalCommand: '', Commands: DEFAULT_SHELL },
          Workdir: stage.workdir,
          User: { OriginalCommand: '', Value: DEFAULT_USER },
        },
      });
    }
  }

  #expose(stage: StageState, instruction: Instruction, at: string): void {
    const lookup = this.#lookup(stage);
    const words = instruction.getArguments().map((argument) => this.#expand(argument.getValue(), lookup, at));
    if (words.length === 0) throw invalid(`${at}: needs a port`);
    for (const word of words) {
      const port = word.toLowerCase();
      if (!PORT.test(port))
        throw invalid(`${at}: ${JSON.stringify(word)} is not a port like 80, 80/tcp or 53/udp`);
      if (!stage.ports.includes(port)) stage.ports.push(port);
    }
  }

  /** CMD / ENTRYPOINT: the exec form's elements, or the shell form's text as one element (as firebuild). */
  #commandLine(instruction: Instruction, at: string): readonly string[] {
    refuseFlags(instruction, at, []);
    const exec = jsonArguments(instruction);
    if (exec !== null) return exec;
    const text = (instruction.getArgumentsContent() ?? '').trim();
    if (text === '') throw invalid(`${at}: needs a command`);
    return [text];
  }

  #stopSignal(stage: StageState, instruction: Instruction, at: string): void {
    const signal = this.#wholeArgument(stage, instruction, at);
    if (!SIGNAL.test(signal))
      throw invalid(`${at}: ${JSON.stringify(signal)} is not a signal name or number`);
    stage.stopSignal = signal;
  }
}

/** A stage's starting state: its base's configuration (an earlier stage's, or an image's), else the defaults. */
function newStage(name: string, index: number, from: StageBase, base: ImageMetadata | undefined): StageState {
  return {
    name,
    index,
    from,
    args: new Map(),
    env: new Map(Object.entries(base?.env ?? {})),
    user: { OriginalCommand: '', Value: base?.user || DEFAULT_USER },
    workdir: { OriginalCommand: '', Value: base?.workdir || DEFAULT_WORKDIR },
    shell: { OriginalCommand: '', Commands: base?.shell.length ? base.shell : DEFAULT_SHELL },
    cmd: base?.entrypoint.Cmd ?? [],
    entrypoint: base?.entrypoint.EntryPoint ?? [],
    cmdInherited: base !== undefined,
    labels: new Map(Object.entries(base?.labels ?? {})),
    ports: [...(base?.ports ?? [])],
    volumes: [...(base?.volumes ?? [])],
    stopSignal: base?.stopSignal ?? null,
    commands: [],
  };
}

function metadataOf(stage: StageState): ImageMetadata {
  const env = Object.fromEntries(stage.env);
  return {
    entrypoint: {
      Cmd: stage.cmd,
      EntryPoint: stage.entrypoint,
      Env: env,
      Shell: stage.shell.Commands,
      User: stage.user.Value,
      Workdir: stage.workdir.Value,
    },
    env,
    labels: Object.fromEntries(stage.labels),
    ports: stage.ports,
    volumes: stage.volumes,
    user: stage.user.Value,
    workdir: stage.workdir.Value,
    shell: stage.shell.Commands,
    stopSignal: stage.stopSignal,
  };
}

/** `next` as an absolute, normalized directory: relative ones are joined to `current`. */
function joinWorkdir(current: string, next: string): string {
  const joined = posix.normalize(next.startsWith('/') ? next : posix.join(current, next));
  return joined.length > 1 && joined.endsWith('/') ? joined.slice(0, -1) : joined;
}

/** FROM's stage name for the pre-scan: lower-cased, or "" when unnamed. */
function stageNameOf(instruction: Instruction): string {
  const words = instruction.getArguments().map((argument) => argument.getValue());
  return words.length === 3 && words[1].toLowerCase() === 'as' ? words[2].toLowerCase() : '';
}

interface PropertyLike {
  getName(): string;
  getUnescapedValue(): string | null;
}

function propertiesOf(instruction: Instruction, at: string): readonly PropertyLike[] {
  const properties =
    (instruction as unknown as { getProperties?: () => PropertyLike[] }).getProperties?.() ?? [];
  if (properties.length === 0) throw invalid(`${at}: needs NAME=value`);
  return properties;
}

interface FlagLike {
  getName(): string;
  getValue(): string | null;
}

/** The instruction's --flags by name; refuses any not in `allowed`, a repeated one, or one without a value. */
function refuseFlags(instruction: Instruction, at: string, allowed: readonly string[]): Map<string, string> {
  const flags = (instruction as unknown as { getFlags?: () => FlagLike[] }).getFlags?.() ?? [];
  const byName = new Map<string, string>();
  for (const flag of flags) {
    const name = flag.getName();
    if (!allowed.includes(name)) throw invalid(`${at}: --${name} is not supported`);
    const value = flag.getValue();
    if (value === null || value === '') throw invalid(`${at}: --${name} needs a value`);
    if (byName.has(name)) throw invalid(`${at}: --${name} is given twice`);
    byName.set(name, value);
  }
  return byName;
}

function refuseHeredocs(instruction: Instruction, at: string): void {
  const heredocs = (instruction as unknown as { getHeredocs?: () => unknown[] }).getHeredocs?.() ?? [];
  if (heredocs.length > 0) throw invalid(`${at}: here-documents (<<) are not supported`);
}

/**
 * The exec (JSON) form's strings, or null for the shell form. Parsed from the
 * argument text with JSON.parse: Docker falls back to the shell form when the
 * text is not a JSON list of strings, and so does this.
 */
function jsonArguments(instruction: Instruction): string[] | null {
  const text = (instruction.getArgumentsContent() ?? '').trim();
  if (!text.startsWith('[') || !text.endsWith(']')) return null;
  try {
    const parsed: unknown = JSON.parse(text);
    if (Array.isArray(parsed) && parsed.every((item) => typeof item === 'string')) return parsed;
  } catch {
    // not JSON: the shell form
  }
  return null;
}
