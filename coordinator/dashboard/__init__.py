"""The operator dashboard, served by the coordinator over HTTP.

`web` (the HTTP server and its routes), `documents` (the JSON API documents, described field by
field in docs/api.md) and `prometheus` (/metrics, through prometheus_client). The page itself is hand-written,
dependency-free
HTML, CSS and JavaScript in this folder (index.html, style.css, charts.js: inline-SVG charts,
app.js: polling, tables, paging), shipped as package data; nothing is fetched from a CDN.
Open it at the address `rankswarm coordinator` prints ("dashboard:"), 127.0.0.1:8080 by default.
"""
