"""Apache Superset configuration for the mpcsql example (SUPERSET_CONFIG_PATH points here).

Everything Superset keeps lives in ``$MPCSQL_SUPERSET_STATE`` (run.sh sets it): the SQLite
metadata database and the secret key run.sh generated there.  Only what differs from
Superset's defaults is set.
"""

import os

_STATE = os.environ["MPCSQL_SUPERSET_STATE"]

with open(os.path.join(_STATE, "secret_key")) as _f:
    SECRET_KEY = _f.read().strip()  # Superset refuses to start with its default key

SQLALCHEMY_DATABASE_URI = "sqlite:///" + os.path.join(_STATE, "superset.db")

# A secure query runs across three parties: give a chart more than the default 60 s if a
# party's policy insists on the Paillier join (about a minute on this data; masked: ~1 s).
SUPERSET_WEBSERVER_TIMEOUT = 300
SQLLAB_TIMEOUT = 300
