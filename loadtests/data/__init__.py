"""Load-test payloads built from the project's English corpus (see loadtests/README.md)."""
