"""Alembic environment: the URL comes from the config set by shared.db.migrate."""

from __future__ import annotations

from alembic import context

from shared.db.models import Base
from shared.db.session import make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url must be set by shared.db.migrate"

if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = make_engine(url)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch mode rebuilds a table to alter it; with foreign keys enforced SQLite would
            # refuse to drop a table that rows still reference. (Must be set outside a
            # transaction, so before configure/begin.)
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()  # end the autobegun transaction so Alembic owns its own
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=sqlite,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
