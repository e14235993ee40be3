"""`siglip serve`: an HTTP service (Starlette + uvicorn) with dynamic batching, zero-shot, search and a web page.

    from siglip.serve import create_app
    app = create_app("google/siglip-base-patch16-224", ["photos.emb"], max_batch_size=32, api_key="secret")
    # uvicorn.run(app, host="127.0.0.1", port=8000)

Needs the `serve` extra (`pip install 'siglip[serve]'`). Routes and JSON shapes: `siglip.serve.app`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Limits", "create_app"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import siglip.serve` names the missing extra instead of failing on starlette's import.
    if name in __all__:
        try:
            from . import app, security
        except ImportError as error:
            from ..errors import DependencyError

            raise DependencyError(f"siglip serve needs its extra: pip install 'siglip[serve]' ({error})") from None
        return app.create_app if name == "create_app" else security.Limits
    raise AttributeError(name)
