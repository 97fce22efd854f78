"""The demo exchange: a deterministic synthetic market served in NEPSE's wire format.

Nothing on ntx's real path depends on this package; `ntx backfill --demo` and the tests
exercise the real client against it.
"""
