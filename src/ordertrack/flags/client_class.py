"""`client_class`: which kind of client opened a connection, from its User-Agent (pure).

The runbook's first lever targets mobile user agents (a longer pong timeout on mobile
networks), so the class is part of every flag evaluation context:

- `mobile`: a browser on a phone or tablet (`Mobi`, as MDN recommends, or an Android/iOS token);
- `desktop`: any other browser (every browser's User-Agent starts with `Mozilla/`);
- `native`: everything else, our apps' HTTP stacks (okhttp, CFNetwork, Dart) and SDKs, and a
  missing User-Agent (browsers always send one).
"""

from __future__ import annotations

import re

MOBILE = "mobile"
DESKTOP = "desktop"
NATIVE = "native"
CLIENT_CLASSES = (MOBILE, DESKTOP, NATIVE)

_MOBILE_TOKENS = re.compile(r"Mobi|Android|iPhone|iPad|iPod|Opera Mini|IEMobile")


def client_class(user_agent: str | None) -> str:
    if not user_agent or not user_agent.startswith("Mozilla/"):
        return NATIVE
    return MOBILE if _MOBILE_TOKENS.search(user_agent) else DESKTOP
