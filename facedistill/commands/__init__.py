"""The CLI verbs that live in their own modules: each defines ``command`` (a click.Command).

Import only click and torch-free modules at the top; heavy imports go inside the command body
so that ``facedistill --help`` stays fast and ``predict``/``bench`` run without torch.
"""
