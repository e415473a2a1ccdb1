"""Run a function in a forked child process and collect its (picklable) result through a pipe:
compare's two device runs per sample are independent, so on a machine with two cores they overlap."""
from __future__ import annotations

import multiprocessing
import os
import traceback


class Forked:
    """`Forked(fn)` starts `fn()` in a forked child; `.result()` waits for and returns its value
    (re-raising a child's exception as RuntimeError)."""

    @staticmethod
    def available() -> bool:
        return "fork" in multiprocessing.get_all_start_methods() and (os.cpu_count() or 1) > 1

    def __init__(self, fn):
        ctx = multiprocessing.get_context("fork")
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child, args=(fn, send), daemon=True)
        self._proc.start()
        send.close()

    def result(self):
        try:
            status, value = self._recv.recv()
        except EOFError:
            status, value = "error", f"the child process died (exit code {self._proc.exitcode})"
        finally:
            self._proc.join()
            self._recv.close()
        if status != "ok":
            raise RuntimeError(value)
        return value


def _child(fn, send) -> None:
    try:
        send.send(("ok", fn()))
    except BaseException:  # noqa: BLE001 - everything goes back to the parent
        send.send(("error", traceback.format_exc(limit=5)))
    finally:
        send.close()
