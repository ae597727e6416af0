"""``wsistore serve``: archives as DeepZoom slides over HTTP, restored on demand.

:func:`wsistore.serve.app.build_app` makes the ASGI application (Starlette) over one or many
archives; :class:`wsistore.serve.server.ServerThread` and :func:`wsistore.serve.server.serve`
run it with uvicorn. Levels finer than the stored pyramid are super-resolved through
``wsistore.open``; coarser ones come from the stored pyramid and never run the generator.
"""

from __future__ import annotations
