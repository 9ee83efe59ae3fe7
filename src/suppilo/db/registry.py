"""Imports every domain's models so that ``Base.metadata`` knows all tables (Alembic, tests)."""

from suppilo.accounts import models as accounts_models  # noqa: F401
from suppilo.advocacy import models as advocacy_models  # noqa: F401
from suppilo.analytics import models as analytics_models  # noqa: F401
from suppilo.capture import models as capture_models
from suppilo.commerce import models as commerce_models
from suppilo.companies import models as companies_models
from suppilo.consent import models as consent_models
from suppilo.contacts import models as contacts_models
from suppilo.db.base import Base
from suppilo.deals import models as deals_models  # noqa: F401
from suppilo.events import models as events_models
from suppilo.events import stream as events_stream  # noqa: F401
from suppilo.journeys import models as journeys_models  # noqa: F401
from suppilo.loyalty import models as loyalty_models  # noqa: F401
from suppilo.messaging import models as messaging_models
from suppilo.messaging import outbox_models as messaging_outbox_models
from suppilo.offers import models as offers_models  # noqa: F401
from suppilo.recommendations import models as recommendations_models  # noqa: F401
from suppilo.scoring import models as scoring_models  # noqa: F401
from suppilo.segments import models as segments_models  # noqa: F401
from suppilo.transfer import models as transfer_models  # noqa: F401
from suppilo.workspaces import models as workspaces_models

__all__ = [
    "Base",
    "capture_models",
    "commerce_models",
    "companies_models",
    "consent_models",
    "contacts_models",
    "events_models",
    "messaging_models",
    "messaging_outbox_models",
    "workspaces_models",
]
