"""`labeler review`: a local web app to browse a run's pairs and SFT rows and add human labels to `RUN/human/`.

`config` holds its options, `index` what the pages read of the run (shard by shard, verified),
`app` the Starlette application (token, CSRF and same-origin checks; jinja2 templates with autoescape),
`serve` starts it under uvicorn.
"""
