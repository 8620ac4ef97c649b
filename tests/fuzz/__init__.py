"""Fuzz and property tests of the compiled data plane through real sockets (issue 9)."""
