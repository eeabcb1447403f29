"""The commands of the `labeler` CLI, one module per group; `labeler.cli.app` registers them.

Options are derived from the config models (`labeler.cli.options`): help texts and defaults are
written once, on the pydantic fields. Heavy libraries are imported inside the run functions, so that
`labeler --help` stays fast.
"""
