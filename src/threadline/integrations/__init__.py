"""threadline as the session store of agent frameworks: ``openai_agents.ThreadlineSession``
for the OpenAI Agents SDK (``pip install 'threadline[openai-agents]'``). Importing threadline
never imports a framework; importing an integration module does."""
