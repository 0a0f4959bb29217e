"""hft-deploy's PostgreSQL migration engine (runbook sections 3.4, 5.2 and 6).

Self-contained on purpose: this directory is copied alone to a database host and run there
with ``python3 -m migrations VERB`` from its parent directory, so it imports nothing from the
rest of the repository and needs only psycopg 3. Importable API::

    from migrations import Engine
    Engine(dsn="host=... dbname=hft_db user=hft_user").up()
"""

from .engine import Engine, MigrationFailed, Status, StepResult, ValidationError
from .db import ConnectError, LockTimeout
from .files import MigrationFile, MigrationFileError, discover, split_statements

__all__ = ["Engine", "MigrationFailed", "Status", "StepResult", "ValidationError",
           "ConnectError", "LockTimeout", "MigrationFile", "MigrationFileError", "discover",
           "split_statements"]
