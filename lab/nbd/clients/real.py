"""The installed binaries, run as they are: today's qemu-img and nbdcopy."""

from __future__ import annotations

import subprocess

from lab.nbd.clients.base import Client, ClientResult, CopyContext, run_process


class QemuImg(Client):
    """qemu-img convert -n into the server's URI."""

    def copy(self, ctx: CopyContext) -> ClientResult:
        src = ctx.image.path(ctx.source_format)
        elapsed, cpu = run_process(["qemu-img", "convert", "-n", *self.about.options, "-f", ctx.source_format,
                                    "-O", "raw", str(src), ctx.uri], ctx)
        return ClientResult(elapsed_s=round(elapsed, 4), clock="spawn to exit", cpu_s=cpu)


class NbdCopy(Client):
    """nbdcopy from the raw source into the server's URI."""

    def copy(self, ctx: CopyContext) -> ClientResult:
        # nbdcopy reads raw only; the raw file holds the same bytes as the qcow2.
        elapsed, cpu = run_process(["nbdcopy", *self.about.options, "--", str(ctx.image.raw), ctx.uri], ctx)
        return ClientResult(notes=["source read from the raw copy of the image"], elapsed_s=round(elapsed, 4),
                            clock="spawn to exit", cpu_s=cpu)


def version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False, timeout=10)
    except OSError:
        return "not installed"
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0] if first else "unknown"
