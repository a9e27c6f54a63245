"""`python -m loadtests run|report`: Locust headless in a child process, then the report.

One module per idea: `locust_run` runs Locust (`machine` records the host meanwhile),
`csv_files` reads what it wrote, `metrics` and `phases` turn that into numbers, `slo` judges
them, `plots` and `summary` show them, `report` puts those together and `cli` is the command
line. The facts about each user class (its task, its request names) sit in `user_classes`.
"""

from loadtests.runner.cli import main

__all__ = ["main"]
