// What a Dockerfile compiles to: per stage, where it starts from and the
// build commands a guest runs (src/guest/build-commands.ts); for the final
// stage, the image configuration the run needs (entrypoint, env, labels,
// ports, volumes). The compiler (dockerfile-compiler.ts) writes these; the
// build orchestration reads them.
import type { BuildCommand } from './build-commands.ts';

/** What a stage's FROM names; the caller decides how to get it. */
export type StageBase =
  | { readonly kind: 'scratch' }
  /** An image reference as written (after ARG expansion), e.g. a sigil image `org/name:version`. */
  | { readonly kind: 'image'; readonly reference: string }
  /** An earlier stage of the same Dockerfile. */
  | { readonly kind: 'stage'; readonly name: string; readonly index: number };

export interface CompiledStage {
  /** `FROM … AS name` lower-cased, or the stage's index as text when unnamed (what `COPY --from` sets as Stage). */
  readonly name: string;
  readonly index: number;
  readonly from: StageBase;
  readonly commands: readonly BuildCommand[];
  /** The stage's image configuration at its end. */
  readonly metadata: ImageMetadata;
}

/** firebuild's EntrypointJSON (firebuild-mmds MMDSRootfsEntrypointInfo): what the guest runner starts. */
export interface EntrypointInfo {
  /** CMD: the exec form's elements, or the shell form's text as one element (firebuild's reader does the same). */
  readonly Cmd: readonly string[];
  /** ENTRYPOINT, in the same two forms; vminit joins it with spaces and runs it under Shell. */
  readonly EntryPoint: readonly string[];
  readonly Env: Readonly<Record<string, string>>;
  readonly Shell: readonly string[];
  readonly User: string;
  readonly Workdir: string;
}

export interface ImageMetadata {
  readonly entrypoint: EntrypointInfo;
  readonly env: Readonly<Record<string, string>>;
  readonly labels: Readonly<Record<string, string>>;
  /** EXPOSE values as written after expansion ("80", "53/udp"), in order, without duplicates. */
  readonly ports: readonly string[];
  /** VOLUME paths (absolute), in order, without duplicates. */
  readonly volumes: readonly string[];
  readonly user: string;
  readonly workdir: string;
  readonly shell: readonly string[];
  /** STOPSIGNAL as written after expansion ("SIGTERM", "15"); null when not set. Recorded, not acted on. */
  readonly stopSignal: string | null;
}

export interface CompiledDockerfile {
  readonly stages: readonly CompiledStage[];
  /** The configuration of the last stage: the image the build produces. */
  readonly metadata: ImageMetadata;
}
