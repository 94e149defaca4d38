"""
The main configuration: Postfix main.cf syntax, declared parameters, and
the frozen Config the service is built from.
"""
