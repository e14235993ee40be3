"""The open_clip / timm oracle tests run only where open_clip imports: `make interop-test` builds that venv.

The main suite's venv has no open_clip (it needs torchvision, which does not import beside this machine's CPU
torch), so there this folder collects nothing.
"""

try:
    import open_clip  # noqa: F401
    import timm  # noqa: F401
except ImportError:
    collect_ignore_glob = ["*.py"]
