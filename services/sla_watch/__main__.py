"""sla_watch: holds an SLA clock for every ticket and emits started, warning, breached,
met and stopped events on time, exactly once per ticket, clock and instance."""

from services.sla_watch.app import build
from services.sla_watch.policy import PolicyError
from services.sla_watch.settings import SlaWatchSettings
from shared.service import main

if __name__ == "__main__":
    main("sla_watch", SlaWatchSettings(), build, PolicyError, "bad SLA policy file")
