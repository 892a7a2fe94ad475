"""Enqueueing many tasks at once: one COPY in the caller's transaction."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from examples.app import EmailInput, send_email
from sqlatasks import enqueue_many


async def send_newsletter(session: AsyncSession, addresses: list[str]) -> int:
    """Queue one e-mail per address; they commit (or roll back) with the caller's transaction."""
    payloads = (EmailInput(to=address, subject="Our autumn newsletter") for address in addresses)
    return await enqueue_many(session, send_email, payloads, priority=-1)
