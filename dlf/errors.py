"""User-facing errors: one line that names the file, key and fix; the CLI prints it and exits 2."""


class DLFError(Exception):
    """Bad input or a refused operation. ``str(err)`` is the whole message a user sees."""

    exit_code = 2
