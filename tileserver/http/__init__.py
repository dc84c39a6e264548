"""HTTP fronts: app factory, error table, one module per front."""

from tileserver.http.convertors import install as _install_convertors

# Before any route exists: routes compile their paths when they are made.
_install_convertors()
