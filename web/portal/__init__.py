"""The web portal: server-rendered pages for researchers, administrators and operators,
in English and Korean, over the same services as the API (web/services).

- app.py        mounts the pages, the static files and the portal's error pages
- sessions.py   the signed session cookie (who is signed in, the CSRF token, the language)
- deps.py       PortalSessionDep, SignedIn, ReadSessionDep-like dependencies for views
- i18n.py       gettext catalogs (Babel), language negotiation, number and date formats
- rendering.py  the Jinja2 environments (one per language) and render()/redirect()
- forms.py      reading a posted form, checking its CSRF token, errors per field
- charts.py     SVG charts drawn on the server
- views/        the pages, one module per audience
"""
