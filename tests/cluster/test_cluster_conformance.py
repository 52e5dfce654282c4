"""Done-when 5: one conformance suite, two hosts.

The session and matching tests of the single-node suite run again here with
ENF_CLUSTER=ray: the same tests, through a gateway whose actors live in Ray
shard actors of a local cluster, with events over Redis. (They also run with
ENF_CLUSTER=local in their own modules.)
"""

from __future__ import annotations

import pytest

from tests.conftest import MakeServer
from tests.functional.test_lifecycle import (  # noqa: F401 (collected again, on the Ray host)
    test_full_lifecycle,
    test_reply_comes_before_the_events_it_caused,
)
from tests.functional.test_matching import (  # noqa: F401
    test_busy_notaries_are_not_listed,
    test_expired_commission_cannot_go_online,
    test_notaries_available_ranks_with_favorites,
    test_offer_expiry_cascades_and_updates_response_average,
    test_preferred_notary_is_offered_first,
    test_request_ttl_cancels_with_no_notary,
    test_same_key_same_session_other_document_conflicts,
)
from tests.functional.test_presence import (  # noqa: F401
    test_away_notary_gets_no_offer,
    test_notary_reconnect_grace,
    test_participant_grace_then_left,
    test_presence_online_requires_profile_free_and_reports_status,
    test_subscribe_gets_full_list_then_changes,
)

pytestmark = pytest.mark.cluster


@pytest.fixture
def make_server(make_cluster_server: MakeServer) -> MakeServer:
    return make_cluster_server
