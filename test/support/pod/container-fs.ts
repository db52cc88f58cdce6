import { lstatSync, mkdirSync, readdirSync, readlinkSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * What one container sees of the filesystem, laid out as a directory of symlinks: the image's
 * content and the pod's volumes at their mount paths. A mount inside an image directory (APISIX's
 * conf/ inside /usr/local/apisix) turns that directory into a real one whose other entries still
 * point into the image. The container's command line is then rewritten to these paths — the one
 * deviation from the injected spec besides istiod's address: no mount namespaces, no chroot.
 */
export class ContainerFs {
  private readonly placed: string[] = [];

  constructor(readonly root: string) {
    mkdirSync(root, { recursive: true, mode: 0o755 });
  }

  /** Makes `containerPath` show `hostPath` (a file or a directory). Later calls win. */
  place(containerPath: string, hostPath: string): void {
    const parts = containerPath.split('/').filter(Boolean);
    let here = this.root;
    for (const part of parts.slice(0, -1)) {
      here = join(here, part);
      this.materialise(here);
    }
    const target = join(this.root, ...parts);
    rmSync(target, { recursive: true, force: true });
    symlinkSync(hostPath, target);
    this.placed.push(containerPath);
  }

  /** A path as seen inside the container → the path here. */
  hostPath(containerPath: string): string {
    return join(this.root, containerPath);
  }

  /**
   * Rewrites every absolute path in `text` that lies under something placed (as a whole word, after
   * a space, `=`, `:` or a quote) to its path here; other paths stay as they are.
   */
  translate(text: string): string {
    const prefixes = [...new Set(this.placed)].sort((a, b) => b.length - a.length).map(escapeRegex);
    if (prefixes.length === 0) return text;
    const pattern = new RegExp(`(^|[\\s=:'"])((?:${prefixes.join('|')})(?=$|[/\\s'";&|)]))`, 'g');
    return text.replace(pattern, (_m, before: string, path: string) => `${before}${this.root}${path}`);
  }

  /** A directory here that may still be a symlink into an image: make it real, keep its entries. */
  private materialise(dir: string): void {
    let stat;
    try {
      stat = lstatSync(dir);
    } catch {
      mkdirSync(dir, { mode: 0o755 });
      return;
    }
    if (!stat.isSymbolicLink()) return;
    const target = readlinkSync(dir);
    const source = target.startsWith('/') ? target : join(dirname(dir), target);
    rmSync(dir);
    mkdirSync(dir, { mode: 0o755 });
    for (const entry of readdirSync(source)) symlinkSync(join(source, entry), join(dir, entry));
  }
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
