// The metadata stored with a built root filesystem, in firebuild's MDRootfs
// shape (firebuild pkg/metadata/metadata.go), and the EntrypointJSON string
// the metadata service hands the guest (firebuild-mmds
// MMDSRootfsEntrypointInfo). Keys and value types are firebuild's, so its
// tools and sigil's read the same files.
import { parseImageReference } from '../protocol/image-names.ts';
import type { EntrypointInfo, ImageMetadata } from './dockerfile-image.ts';

export interface RootfsMetadata {
  readonly BuildConfig: {
    readonly BuildArgs: Readonly<Record<string, string>>;
    readonly Dockerfile: string;
    readonly DockerImage: string;
    readonly DockerImageBase: string;
    readonly PreBuildCommands: readonly string[];
    readonly PostBuildCommands: readonly string[];
  };
  readonly CreatedAtUTC: number;
  readonly EntrypointInfo: EntrypointInfo;
  readonly Image: { readonly Org: string; readonly Image: string; readonly Version: string };
  readonly Labels: Readonly<Record<string, string>>;
  readonly Parent: null;
  readonly Ports: readonly string[];
  readonly Tag: string;
  readonly Type: 'rootfs';
  readonly Volumes: readonly string[];
}

export interface RootfsBuild {
  /** `org/name:version` (checked with parseImageReference). */
  readonly tag: string;
  /** Where the Dockerfile came from, as the user named it. */
  readonly dockerfile: string;
  readonly buildArgs: Readonly<Record<string, string>>;
  /** Seconds since the epoch, UTC (firebuild's CreatedAtUTC). */
  readonly createdAtUtc: number;
}

/** firebuild's MDRootfs for an image built with `metadata` as its final configuration. */
export function rootfsMetadata(metadata: ImageMetadata, build: RootfsBuild): RootfsMetadata {
  const reference = parseImageReference(build.tag);
  const slash = reference.name.lastIndexOf('/');
  return {
    BuildConfig: {
      BuildArgs: build.buildArgs,
      Dockerfile: build.dockerfile,
      DockerImage: '',
      DockerImageBase: '',
      PreBuildCommands: [],
      PostBuildCommands: [],
    },
    CreatedAtUTC: build.createdAtUtc,
    EntrypointInfo: metadata.entrypoint,
    Image: {
      // firebuild's "_" stands for "no org".
      Org: slash === -1 ? '_' : reference.name.slice(0, slash),
      Image: reference.name.slice(slash + 1),
      Version: reference.tag,
    },
    Labels: metadata.labels,
    Parent: null,
    Ports: metadata.ports,
    Tag: reference.reference,
    Type: 'rootfs',
    Volumes: metadata.volumes,
  };
}

/** The metadata document's EntrypointJSON value. */
export function entrypointJson(entrypoint: EntrypointInfo): string {
  return JSON.stringify({
    Cmd: entrypoint.Cmd,
    EntryPoint: entrypoint.EntryPoint,
    Env: entrypoint.Env,
    Shell: entrypoint.Shell,
    User: entrypoint.User,
    Workdir: entrypoint.Workdir,
  });
}
