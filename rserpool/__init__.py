"""A compact RSerPool stack (RFC 5351–5356): wire codec, handlespace, policies, registrar, PE and PU."""

__version__ = "0.1.0"
