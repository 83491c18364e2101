"""The HTML kit every page of the project is built with.

`page` holds the frame (document, shared style, escaping, cards, badges, tables), `charts` the
matplotlib charts inlined as `<svg>`, `screenshot` the PNG of a page as headless Chromium draws
it. `drift_page` is the drift report's page; the demo's page is `demo.report`.

The pages are single files a person opens from disk or gets as an attachment, on hosts that
often have no internet: no script, no external stylesheet, font, image or URL, and every text
that comes from data escaped.
"""
