"""Shopping carts behind HTTP, one persistent actor per user: run ``python -m examples.cart``."""

from .cart import CATALOG, ONE_PER_CUSTOMER, Cart, cart_name
from .demo import CartReport, demo, serve, show
from .web import CartClient, HttpFront, make_app, start_fronts, start_server

__all__ = ["CATALOG", "ONE_PER_CUSTOMER", "Cart", "CartClient", "CartReport", "HttpFront", "cart_name",
           "demo", "make_app", "serve", "show", "start_fronts", "start_server"]
