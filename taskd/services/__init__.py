"""Services: the worker engine and the promoter's loops."""
