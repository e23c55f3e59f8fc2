"""Shopping carts behind a FastAPI app, one persistent actor per user: run ``python -m examples.cart``.

The app: ``python -m kernel run examples.cart.app:root --asgi examples.cart.app:app --port 8080``.
"""

from .app import carts, root
from .cart import CATALOG, ONE_PER_CUSTOMER, Cart, cart_name
from .client import CartClient
from .demo import CartReport, demo, running, serve, show
from .web import HttpFront, make_app, start_fronts, start_server

__all__ = ["CATALOG", "ONE_PER_CUSTOMER", "Cart", "CartClient", "CartReport", "HttpFront", "cart_name",
           "carts", "demo", "make_app", "root", "running", "serve", "show", "start_fronts", "start_server"]
