"""Build hook for the one thing pyproject.toml cannot declare: the optional C extension.

``ledger._merkle_accel`` speeds up RFC 9162 node hashing with OpenSSL's SHA-256 (needs a
C compiler and the libssl headers: gcc, libssl-dev on Debian). ``optional=True``: when it
cannot be built, the install still succeeds and ``ledger.merkle`` uses its pure-Python
code, which is the reference anyway. Everything else lives in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ledger._merkle_accel",
            ["ledger/_merkle_accel.c"],
            libraries=["crypto"],
            optional=True,
        )
    ]
)
