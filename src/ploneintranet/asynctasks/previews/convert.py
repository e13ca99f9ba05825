"""Converting uploaded bytes into a preview image, as befits bytes an
uploader chose: :func:`run_converter` runs a command without network, within
``ASYNC_PREVIEW_TIMEOUT`` and ``ASYNC_PREVIEW_MEMORY_MB``; :func:`first_page_png`
renders a PDF's first page with it (and, in
:mod:`~ploneintranet.asynctasks.previews.office`, LibreOffice's PDF of an
Office document).

Nothing here knows Zope or Plone: it takes bytes and gives bytes or raises
:class:`ConversionFailed`. What the site keeps of an outcome is
:mod:`ploneintranet.asynctasks.previews`' business.
"""

import math
import os
from ploneintranet.asynctasks import celeryconfig
import shutil
import signal
import subprocess
import tempfile
import time


MIB = 1024 * 1024
#: ``unshare`` options for a network namespace of its own, tried in turn:
#: as root, then inside a user namespace (any user, where the kernel allows).
UNSHARE_OPTIONS = (("--net",), ("--map-current-user", "--net"))
#: Debian packages of the commands we run, for the error that one is missing.
PACKAGES = {
    "pdftoppm": "poppler-utils",
    "prlimit": "util-linux",
    "unshare": "util-linux",
    "soffice": "libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui",
}


class ConversionFailed(Exception):
    """A converter made nothing of these bytes: it ran out of time, hit a
    limit or failed; the message says which. The same bytes fail again."""


class ConverterUnavailable(ConversionFailed):
    """This machine cannot run the converter safely (a command is missing or
    no network namespace is allowed); the message says what to change."""


def first_page_png(pdf):
    """The first page of the PDF bytes ``pdf`` as PNG bytes, rendered by
    ``pdftoppm`` under :func:`run_converter`; raises :class:`ConversionFailed`."""
    with tempfile.TemporaryDirectory(prefix="asynctasks-preview-") as directory:
        with open(os.path.join(directory, "source.pdf"), "wb") as out:
            out.write(pdf)
        run_converter(
            ["pdftoppm", "-png", "-f", "1", "-l", "1", "-scale-to", "800", "-singlefile", "source.pdf", "page"],
            directory,
        )
        try:
            with open(os.path.join(directory, "page.png"), "rb") as page:
                return page.read()
        except FileNotFoundError:
            raise ConversionFailed("pdftoppm finished but made no page") from None


def run_converter(argv, directory, timeout=None, memory_mb=None):
    """Run the converter command ``argv`` in ``directory``, as befits a
    program reading bytes an uploader chose: in a network namespace of its own
    (no network), with at most ``memory_mb`` MiB of address space and as much
    file size, ``timeout`` seconds and as many of CPU time, no core dump.

    ``timeout`` and ``memory_mb`` default to ``celeryconfig``'s
    ``ASYNC_PREVIEW_TIMEOUT`` and ``ASYNC_PREVIEW_MEMORY_MB``. It gets an
    environment of its own: ``PATH``, ``LANG`` and ``directory`` as its
    ``HOME`` and ``TMPDIR`` (nothing of the instance's settings, and what it
    writes is where the caller removes it). At the end, or on timeout, the
    command's whole process group is killed. Returns the last line it wrote
    once it exited with status 0; raises :class:`ConversionFailed` saying why
    otherwise, and :class:`ConverterUnavailable` if a command or the
    namespace is missing.
    """
    timeout = celeryconfig.ASYNC_PREVIEW_TIMEOUT if timeout is None else timeout
    memory_mb = celeryconfig.ASYNC_PREVIEW_MEMORY_MB if memory_mb is None else memory_mb
    name, program = os.path.basename(argv[0]), required(argv[0])
    # limits by prlimit(1) and a session by setsid: no preexec_fn in threaded Zope
    limits = [f"--as={memory_mb * MIB}", f"--fsize={memory_mb * MIB}", f"--cpu={math.ceil(timeout) + 1}", "--core=0"]
    command = [*no_network_prefix(), required("prlimit"), *limits, "--", program, *argv[1:]]
    with tempfile.TemporaryFile() as output:  # a file: a chatty converter fills no pipe
        process = subprocess.Popen(
            command,
            cwd=directory,
            env=converter_environment(directory),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            status = process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ConversionFailed(
                f"{name} took longer than {timeout:g} s (ASYNC_PREVIEW_TIMEOUT) and was killed"
            ) from None
        finally:
            kill_group(process)
        said = last_line(output)
        if status != 0:
            raise ConversionFailed(failure(name, status, memory_mb, said))
        return said


def converter_environment(directory):
    """The environment of a converter that works in ``directory``."""
    return {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8", "HOME": directory, "TMPDIR": directory}


def no_network_prefix():
    """``unshare`` and the options that run a command in a network namespace
    of its own here (only a loopback device, down); raises
    :class:`ConverterUnavailable` if this machine allows none."""
    unshare = required("unshare")
    for options in UNSHARE_OPTIONS:
        probe = subprocess.run(
            [unshare, *options, "true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
        if probe.returncode == 0:
            return [unshare, *options, "--"]
    raise ConverterUnavailable(
        "cannot run a converter without network here "
        f"({probe.stderr.decode(errors='replace').strip()}): run Plone as root, or let "
        "its user create user namespaces (sysctl user.max_user_namespaces above 0; "
        "a container needs a seccomp profile that allows unshare)"
    )


def required(command):
    """The path of ``command``; raises :class:`ConverterUnavailable` naming its
    Debian package if it is not installed."""
    path = shutil.which(command)
    if path is None:
        package = PACKAGES.get(os.path.basename(command), "the package that has it")
        raise ConverterUnavailable(f"{command} is not installed: apt-get install {package}")
    return path


def kill_group(process):
    """Kill what is left of the process group that ``process`` leads; reap it,
    and wait (up to 5 s) until none of the group runs any more: SIGKILL is
    delivered at once, but a killed process takes a moment to exit."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it exited and left nothing behind
    process.wait()
    deadline = time.monotonic() + 5
    while group_runs(process.pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def group_runs(pgid):
    """True while a process of the process group ``pgid`` has not ended
    (Linux /proc; an ended, unreaped process does not count)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                state, _, group = stat.read().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state not in ("Z", "X"):
            return True
    return False


def last_line(output):
    """The last line the converter wrote to the file ``output``, at most 200 characters."""
    output.seek(max(0, output.seek(0, os.SEEK_END) - 2000))
    lines = output.read().decode(errors="replace").strip().splitlines()
    return lines[-1][-200:] if lines else ""


def failure(name, status, memory_mb, last):
    """Why the converter ``name`` that ended with ``status`` made nothing."""
    if status == -signal.SIGXCPU:
        return f"{name} used more CPU time than ASYNC_PREVIEW_TIMEOUT allows and was killed"
    how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
    hint = ""
    if status < 0 or "memory" in last.lower() or "alloc" in last.lower():
        hint = f"; the limit of {memory_mb} MiB (ASYNC_PREVIEW_MEMORY_MB) may be too small"
    return f"{name} {how}: {last!r}{hint}"
