"""An untraced `enqueue()` writes the INSERT it wrote before schema version 8: no
`trace_context` column, as `enqueue_many`'s COPY already names it only when there is a context.

Found by a cold review: the ORM named `trace_context` (NULL) in every INSERT, so application
code updated before its database's migration failed every `enqueue()` with `column
"trace_context" of relation "sqlatasks_tasks" does not exist`, though nothing was traced.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from sqlatasks import enqueue, enqueue_many, tracing
from tests.conftest import alembic
from tests.runner_tasks import Job, record


async def test_an_untraced_enqueue_works_on_a_schema_before_the_trace_column(
    db_url: str,
) -> None:
    assert not tracing.configured()
    done = alembic(db_url, "downgrade", "0007_sqlatasks_v7")
    assert done.returncode == 0, done.stderr
    engine = create_async_engine(db_url)
    try:
        async with async_sessionmaker(engine)() as session, session.begin():
            session.add(enqueue(record, Job(key=1)))
            assert await enqueue_many(session, record, [Job(key=2)]) == 1
        async with engine.connect() as conn:
            count = await conn.execute(text("SELECT count(*) FROM sqlatasks_tasks"))
            assert count.scalar_one() == 2
    finally:
        await engine.dispose()


async def test_a_traced_row_still_records_its_context(session: AsyncSession) -> None:
    row = enqueue(record, Job(key=3))
    row.trace_context = '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'
    session.add(row)
    await session.flush()
    found = await session.execute(
        text("SELECT trace_context->>'traceparent' FROM sqlatasks_tasks WHERE id = :id"),
        {"id": row.id},
    )
    assert found.scalar_one().startswith("00-0af765")
