"""A plugin tool module: `microturn demo --tools examples/weather.py`, or `[world] tool_modules` in a scenario.

Every `@tool` defined at the top level of the module is registered beside the built-in tools. This one is a
stand-in that answers from a table (a real one would call a weather service with `httpx`).
"""

from typing import Annotated

import msgspec

from microturn.tools import ToolContext, tool

FORECASTS = {"paris": "sunny, 21 degrees", "london": "light rain, 14 degrees", "oslo": "snow, minus 3 degrees"}


@tool(timeout=5.0)
async def weather(
    ctx: ToolContext,
    city: Annotated[str, msgspec.Meta(min_length=1, max_length=80, description="the city to look up")],
) -> str:
    """Today's weather in a city."""
    await ctx.sleep(0.3)  # session time: the lookup takes 300 ms, instantly in lockstep
    forecast = FORECASTS.get(city.strip().lower())
    if forecast is None:
        return f"I have no forecast for {city}."
    return f"The weather in {city.strip().title()} is {forecast}."
