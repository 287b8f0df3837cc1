"""The cache's glue to the web framework: whole-view caching (an ASGI middleware and the
`@cached` decorator), the Jinja `{% cache %}` tag and sessions kept in the cache.

Only this package may import Quart, werkzeug, Jinja or itsdangerous on the cache's behalf:
`app.cache` (the cache-aside core and its memcached transport) imports none of them, which
its own `ruff.toml` enforces.
"""
