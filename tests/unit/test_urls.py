from __future__ import annotations

import pytest

from conveyor.urls import redact_url


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://alice:pa/ss@db/x", "postgresql://alice:***@db/x"),
    ("postgresql://alice:p@ss@db/x", "postgresql://alice:***@db/x"),
    ("postgresql://alice:p:w:d@db:5433/x", "postgresql://alice:***@db:5433/x"),
    ("postgresql://alice:p%40ss%2Fw@db/x", "postgresql://alice:***@db/x"),
    ("postgresql://alice@db/x", "postgresql://alice@db/x"),
    ("postgresql://db/x?password=secret&sslmode=require",
     "postgresql://db/x?password=***&sslmode=require"),
    ("host=db user=alice password=s3cr3t dbname=x", "host=db user=alice password=*** dbname=x"),
    ("sqlite:///conveyor.db", "sqlite:///conveyor.db"),
    ("sqlite:////var/lib/app@2/conveyor.db", "sqlite:////var/lib/app@2/conveyor.db"),
])
def test_passwords_never_show(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    for secret in ("pa/ss", "p@ss", "p:w:d", "p%40ss", "secret", "s3cr3t"):
        assert secret not in redact_url(url)
