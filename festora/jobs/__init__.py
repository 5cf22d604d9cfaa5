"""Jobs: whole events analysed in the background, durably, with progress and paged results.

`schemas` is the wire format, `store` the storage interface (`sqlite_store` its embedded
implementation), `throttle` how job images give way to synchronous requests, `runner` the
background worker, and `api` what the HTTP routes call.
"""
