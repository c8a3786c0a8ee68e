"""The reference dashboard (city side, never on the device): ``edge dashboard``.

A small HTTP server (:mod:`edge.dashboard.server`) hands a browser one static page (``static/``: HTML, CSS,
our JavaScript and vendored, pinned libraries; no build step, nothing fetched from elsewhere), the
page's settings, the contract's JSON Schemas as committed in ``contract/schemas`` and, with an archive,
the last hours of windows (:mod:`edge.dashboard.archive`). The page connects to the broker itself, over
MQTT on WebSockets with the viewer's own read-only credentials, validates every message against the
schemas and shows what does not match. The server never sees a credential or a message.

Nothing is imported here: ``edge`` builds its parser with :mod:`edge.dashboard.command` on every run, and
the HTTP server is loaded only when ``edge dashboard`` runs.
"""
