"""The one assembly: the typed backend registry, the standard pipeline, plugin tools and actors, and plugins
on replay (recordings are data: replay imports a plugin only when the user names it again)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

from microturn.actors import (
    BackgroundActor,
    ClockActor,
    DialogStateActor,
    InteractionActor,
    OutputMixer,
    PerceptionActor,
    ToolRunner,
)
from microturn.assembly import (
    BACKENDS,
    BackendError,
    BackendRegistry,
    PipelineError,
    PipelineSpec,
    PluginError,
    allow_plugins,
    build_from_params,
    build_pipeline,
    load_actor_factory,
    load_tool_module,
    make_backend,
    tool_registry,
)
from microturn.model.protocol import ModelBackend
from microturn.model.scripted import ScriptedPolicy
from microturn.runtime import RecordingError, read_recording, replay, run_lockstep
from microturn.scenarios import ScenarioError, load_scenario, run_scenario

REPO = Path(__file__).resolve().parents[2]
WEATHER = REPO / "examples" / "weather.py"
STANDARD = [ClockActor, PerceptionActor, DialogStateActor, InteractionActor, OutputMixer, BackgroundActor, ToolRunner]


def _scenario(tmp_path: Path, *, modules: str = '["weather.py"]', expect_tool: str | None = None) -> Path:
    (tmp_path / "weather.py").write_text(WEATHER.read_text())
    extra = f'\n[[expect]]\nkind = "no_tool_called"\ntool = "{expect_tool}"\n' if expect_tool else ""
    path = tmp_path / "weather-question.toml"
    path.write_text(textwrap.dedent(f"""\
        name = "weather-question"
        duration = 8.0
        [model]
        name = "scripted"
        [world]
        tools = "builtin"
        background = "offline"
        tool_modules = {modules}
        [[timeline]]
        kind = "say"
        at = 0.4
        text = "what is the weather in Oslo?"
        [[expect]]
        kind = "says"
        pattern = "The weather in Oslo is snow, minus 3 degrees"
        """) + extra)
    return path


# --- the backend registry ---------------------------------------------------------------------------------------


def test_every_registered_backend_is_a_model_backend() -> None:
    assert BACKENDS.names() == ["embedded", "local", "scripted", "sglang", "sglang-text"]
    made = make_backend("scripted")
    assert isinstance(made, ModelBackend) and isinstance(made, ScriptedPolicy)
    client = make_backend("sglang:http://127.0.0.1:9")
    assert isinstance(client, ModelBackend) and client.mode == "native"
    assert make_backend("sglang-text:http://127.0.0.1:9").mode == "text"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gpt", "--model gpt: unknown model; known: embedded, local, scripted, sglang, sglang-text"),
        ("local:/nonexistent", "--model local:/nonexistent: no checkpoint at /nonexistent (nor /nonexistent.pt)"),
        ("local", "--model local: the local model needs a checkpoint"),
        ("local:", "--model local:: nothing after 'local:' (expected the checkpoint)"),
        ("scripted:fast", "--model scripted:fast: the scripted model takes no ':' argument"),
        ("sglang", "--model sglang: needs a server URL"),
    ],
)
def test_a_bad_model_names_the_flag_and_what_was_typed(spec: str, message: str) -> None:
    with pytest.raises(BackendError) as caught:
        make_backend(spec)
    assert str(caught.value).startswith(message)
    assert caught.value.key == "--model" and caught.value.value == spec


def test_options_a_backend_refuses_are_named() -> None:
    with pytest.raises(BackendError, match=r"the scripted model refuses the options \{'speed': 2\}"):
        make_backend("scripted", {"speed": 2}, key="model.name")


def test_a_registry_is_open_to_new_backends() -> None:
    registry = BackendRegistry()
    made: list[dict] = []

    def factory(options: dict) -> ModelBackend:
        made.append(options)
        return ScriptedPolicy()

    registry.register("mine", factory, argument="url")
    assert isinstance(registry.make("mine:http://x", {"a": 1}), ScriptedPolicy)
    assert made == [{"a": 1, "url": "http://x"}]
    with pytest.raises(ValueError, match="no ':'"):
        registry.register("a:b", factory)


# --- the pipeline -----------------------------------------------------------------------------------------------


def test_the_standard_pipeline() -> None:
    actors = build_pipeline(PipelineSpec(model="scripted"))
    assert [type(a) for a in actors] == STANDARD
    assert [a.name for a in actors][-2:] == ["background", "tool_runner"]
    interaction = actors[3]
    assert "calculate" in interaction.tools and "session_time" in interaction.tools


def test_a_pipeline_without_tools() -> None:
    actors = build_pipeline(PipelineSpec(model="scripted", tools="none", background="none"))
    assert [type(a) for a in actors] == STANDARD[:5]
    with pytest.raises(PipelineError, match="offline planner needs tools = 'builtin'"):
        build_pipeline(PipelineSpec(model="scripted", tools="none"))


@pytest.mark.parametrize(("dialog", "message"), [
    ({"patience": 1.0}, "dialog.patience = 1.0: unknown dialog timing; known: onset, "),
    ({"onset": 0.0}, r"dialog.onset = 0.0: must be a number of seconds in \(0, 3600\]"),
    ({"onset": 1e9}, r"dialog.onset = 1000000000.0: must be a number"),
])
def test_dialog_timings_are_checked(dialog: dict, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        build_pipeline(PipelineSpec(model="scripted", dialog=dialog))


def test_a_pipeline_description_is_plain_data() -> None:
    spec = PipelineSpec(model="scripted", tool_modules=[str(WEATHER)], dialog={"onset": 0.6})
    data = msgspec.to_builtins(spec)
    assert msgspec.convert(data, PipelineSpec) == spec
    with pytest.raises(PipelineError, match="invalid"):
        build_from_params(model="scripted", colour="blue")


# --- plugins ----------------------------------------------------------------------------------------------------


def test_a_tool_file_registers_every_tool_it_defines() -> None:
    tools = load_tool_module(str(WEATHER))
    assert [t.name for t in tools] == ["weather"]
    assert tools[0].schema["properties"]["city"]["maxLength"] == 80
    registry = tool_registry(PipelineSpec(tool_modules=[str(WEATHER)], http_allow=[]))
    assert "weather" in registry.names() and "calculate" in registry.names()
    assert load_tool_module(str(WEATHER))[0] is tools[0]  # a second load reuses the module


def test_a_dotted_tool_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mt_test_plugin_tools.py").write_text(WEATHER.read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    assert [t.name for t in load_tool_module("mt_test_plugin_tools")] == ["weather"]


@pytest.mark.parametrize(("source", "spec", "message"), [
    (None, "no/such/file.py", "--tools no/such/file.py: no such file"),
    (None, "no_such_module_xyz", "--tools no_such_module_xyz: no such module"),
    ("X = 1\n", "plain.py", "--tools {path}: defines no @tool function"),
    ("raise RuntimeError('boom')\n", "broken.py", "--tools {path}: importing it failed: RuntimeError: boom"),
])
def test_a_bad_tool_module_is_a_clear_error(tmp_path: Path, source: str | None, spec: str, message: str) -> None:
    if source is not None:
        (tmp_path / spec).write_text(source)
        spec = str(tmp_path / spec)
    with pytest.raises(PluginError) as caught:
        load_tool_module(spec)
    assert str(caught.value).startswith(message.format(path=spec))


def test_a_plugin_tool_may_not_take_a_builtin_name(tmp_path: Path) -> None:
    clash = tmp_path / "clash.py"
    clash.write_text("from microturn.tools import tool\n\n@tool\nasync def calculate(expression: str) -> str:\n"
                     "    '''Mine.'''\n    return expression\n")
    with pytest.raises(PluginError, match="'calculate' is already a built-in tool"):
        tool_registry(PipelineSpec(tool_modules=[str(clash)]))


def test_actor_factories(tmp_path: Path) -> None:
    plugin = tmp_path / "extra_actor.py"
    plugin.write_text(textwrap.dedent("""\
        from microturn.messages import Mark, UserText
        from microturn.runtime import Actor

        class Echo(Actor):
            '''Marks every line the user types.'''
            subscriptions = (UserText,)

            async def handle(self, message):
                await self.publish(Mark(name="heard:" + message.text))

        def make():
            return Echo(name="echo")

        def not_an_actor():
            return 42
        """))
    assert load_actor_factory(f"{plugin}:make")().name == "echo"
    actors = build_pipeline(PipelineSpec(model="scripted", actors=[f"{plugin}:make"]))
    assert actors[-1].name == "echo"
    with pytest.raises(PluginError, match="returned int, not an Actor"):
        build_pipeline(PipelineSpec(model="scripted", actors=[f"{plugin}:not_an_actor"]))
    with pytest.raises(PluginError, match="has no callable 'nope'"):
        load_actor_factory(f"{plugin}:nope")
    with pytest.raises(PluginError, match="expected MODULE:FACTORY"):
        load_actor_factory("just_a_module")


# --- plugins in scenarios, and on replay ------------------------------------------------------------------------


def test_a_scenario_calls_a_tool_from_a_file_outside_the_package(tmp_path: Path) -> None:
    result = run_scenario(_scenario(tmp_path), model="scripted", record=tmp_path / "wx.mtrec")
    assert result.ok, [o.observed for o in result.outcomes]
    finals = [m.text for m in result.messages if type(m).__name__ == "BackgroundUpdate" and m.status == "final"]
    assert finals == ["The weather in Oslo is snow, minus 3 degrees."]
    assert result.scenario.world.tool_modules == [str(tmp_path / "weather.py")]


def test_replay_imports_a_recorded_plugin_only_when_named(tmp_path: Path) -> None:
    path = tmp_path / "wx.mtrec"
    run_scenario(_scenario(tmp_path), model="scripted", record=path)
    with pytest.raises(RecordingError, match=r"replay runs plugin code only when you name it: add --tools"):
        run_lockstep(lambda: replay(path))
    with allow_plugins([str(tmp_path / "weather.py")]):
        result = run_lockstep(lambda: replay(path))
    assert result.ok and result.compared == len(read_recording(path).messages)


def test_run_tools_flag_and_unknown_tool_names(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, modules="[]")
    result = run_scenario(scenario, model="scripted", tools=[str(tmp_path / "weather.py")])
    assert result.ok
    with pytest.raises(ScenarioError, match=r"expect\[1\].tool = 'forecast': unknown tool; this session offers: "):
        run_scenario(_scenario(tmp_path, expect_tool="forecast"), model="scripted")
    with pytest.raises(ScenarioError, match=r"world.tool_modules\[0\] = 'missing.py': no such file"):
        load_scenario(_scenario(tmp_path, modules='["missing.py"]'))


def test_the_cli_runs_a_plugin_tool_and_names_a_bad_one(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, modules="[]")
    ok = subprocess.run([sys.executable, "-m", "microturn", "run", str(scenario), "--model", "scripted",
                         "--tools", str(tmp_path / "weather.py")], capture_output=True, text=True, timeout=300, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS weather-question" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "microturn", "run", str(scenario), "--model", "scripted",
                          "--tools", "no_such_module_xyz"], capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 2
    assert "--tools no_such_module_xyz: no such module" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_readme_shows_the_example_plugin_as_it_is() -> None:
    readme = (REPO / "README.md").read_text()
    example = WEATHER.read_text().split('"""', 2)[2].strip()
    assert example in readme


def test_a_demo_with_a_plugin_replays_only_with_the_plugin_named(tmp_path: Path) -> None:
    path = tmp_path / "wx.mtrec"

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "microturn", *argv], capture_output=True, text=True, check=False,
                              timeout=300, cwd=tmp_path)

    made = cli("demo", "--model", "scripted", "--ticks", "20", "--tools", str(WEATHER), "--record", str(path))
    assert made.returncode == 0, made.stderr
    assert read_recording(path).header.factory == "microturn.assembly:build_from_params"
    refused = cli("replay", str(path))
    assert refused.returncode == 2
    assert f"add --tools {WEATHER}" in refused.stderr and "Traceback" not in refused.stderr
    allowed = cli("replay", str(path), "--tools", str(WEATHER))
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "replay OK" in allowed.stdout
