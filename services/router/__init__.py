"""router: classifies each customer message and assigns its ticket a priority, a skill
tier, a queue and (when one is free) an agent."""
