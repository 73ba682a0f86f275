"""Shared fixtures: small real image subsets and an isolated, offline environment."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Before anything imports keras: offline, and no user cache leaks into tests.
_HOME = tempfile.mkdtemp(prefix="bottleneck-test-home-")
os.environ["BOTTLENECK_OFFLINE"] = "1"
os.environ["BOTTLENECK_TEST_FAULTS"] = "1"  # arms core.faults (inert for users)
os.environ["BOTTLENECK_HOME"] = _HOME
os.environ["KERAS_HOME"] = os.path.join(_HOME, "keras")
os.environ.pop("BOTTLENECK_WEIGHTS_DIR", None)
os.environ.pop("BOTTLENECK_DATA_DIR", None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SCIPY_ARRAY_API", "1")  # scikit-learn's array-API estimator check runs (else it skips)
# One TensorFlow thread pool thread per test process (subprocesses inherit it): the tests run on two
# workers on two cores, and TensorFlow's default pools per process spent 28% more CPU on the same tests.
for _var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402

from . import warm  # noqa: E402  (warm.BASE_ENV: the environment set above)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


@pytest.fixture(autouse=True)
def _variables_as_set():
    """After each test, the variables set above (and all that were set when the suite started) have
    their values again. Libraries some tests use change them for the whole process (tf2onnx sets
    TF_CPP_MIN_LOG_LEVEL as it converts, in a module's fixture), which would make what later tests'
    processes see depend on the order the tests ran in. Variables a library adds (TensorFlow's, as
    it is imported) stay."""
    yield
    for name, value in warm.BASE_ENV.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def copy_cifar_subset(dest: Path, classes: int = 4, train: int = 6, test: int = 3) -> Path:
    """An image folder of real CIFAR-10 JPEGs from the embedded data."""
    for split, n in (("train", train), ("test", test)):
        for cdir in sorted((DATA / "cifar10" / split).iterdir())[:classes]:
            out = dest / split / cdir.name
            out.mkdir(parents=True, exist_ok=True)
            for f in sorted(cdir.iterdir())[:n]:
                shutil.copy2(f, out / f.name)
    return dest


@pytest.fixture
def small_cifar(tmp_path) -> Path:
    return copy_cifar_subset(tmp_path / "cifar_small")


@pytest.fixture
def kill_dataset(tmp_path) -> Path:
    """40 training images (4 classes x 10): 10 chunks of 4, for runs stopped part way."""
    return copy_cifar_subset(tmp_path / "kd", classes=4, train=10, test=1)


@pytest.fixture
def tiny_best(monkeypatch):
    """best and best-semi as they are, with parts tiny_cnn has (a stage-5 map and efficientnet_lite2
    would be slow here)."""
    import dataclasses

    from bottleneck.experiments import recipes

    for name in ("best", "best-semi"):
        monkeypatch.setitem(recipes.RECIPES, name, dataclasses.replace(recipes.RECIPES[name], stack=(":conv1:grid2",)))


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "features"


# The markers (pyproject.toml), in one place. Tests that start fresh Python processes (process death,
# a signal, or a clean interpreter is what they test):
SUBPROCESS = {
    "test_lab.py::test_solution_notebook_runs_top_to_bottom",  # a Jupyter kernel each
    "test_lab.py::test_untouched_exercise_notebook_stops_at_its_first_todo",
    "test_hardening.py::test_a_bad_decode_budget_is_a_clear_error_not_an_import_traceback",
    "test_hardening.py::test_fault_injection_is_inert_unless_the_test_suite_arms_it",
    "test_cli.py::test_console_entry_point_runs_as_a_module",
    "test_cli.py::test_weights_file_for_another_architecture_cli",
    "test_cluster.py::test_driver_sigkill_then_rerun_resumes",
    "test_cluster.py::test_an_address_nobody_answers_at_is_a_clear_error",
    "test_cluster.py::test_a_worker_that_keeps_dying_is_a_clear_error",
    "test_export.py::test_exported_model_loads_without_bottleneck_and_predicts_like_the_pipeline",
    "test_extract.py::test_sigkill_then_rerun_equals_uninterrupted",
    "test_extract.py::test_the_file_is_assembled_as_its_chunks_come",
    "test_extract.py::test_chunk_folders_left_by_a_killed_removal_are_swept",
    "test_extract.py::test_ctrl_c_exits_130_with_a_resume_hint",
    "test_extract.py::test_two_processes_same_features_extract_once",
    "test_extract.py::test_locks_are_per_file",
    "test_forward.py::test_under_jax_the_pipeline_gives_predict_on_batchs_features_bit_for_bit",
    "test_grid.py::test_a_stopped_grid_keeps_finished_rows_and_a_rerun_reuses_them",
    "test_grid.py::test_two_grids_into_one_folder_keep_both",
    "test_layout.py::test_the_import_rule_holds",
    "test_memory.py::test_the_cli_names_a_bomb_without_pil_warnings",
    "test_memory.py::test_peak_memory_does_not_grow_with_the_number_of_huge_images",
    "test_properties.py::test_fingerprint_stable_across_processes_and_key_order",
    "test_sampling.py::test_same_draw_in_another_process",
    "test_segmentation.py::test_training_reads_maps_lazily",
}
# Tests that took 4 s or more on the 2-core machine (./test.sh's --durations, 2026-12-06), besides those
# above and the Ray tests: the quick lane, ./test.sh -m "not slow", leaves all of them out.
SLOW = {
    "test_export.py::test_compare_plots_and_report_page",
    "test_export.py::test_built_in_preprocessing_gives_the_pipelines_features",
    "test_export.py::test_pictures_of_the_other_tasks",
    "test_segmentation.py::test_camvid_end_to_end_twice",
    "test_heads.py::test_scikit_learn_estimator_checks",
    "test_heads.py::test_heads_in_pipelines_cross_validation_and_grid_search",
    "test_lab.py::test_a_lesson_runs_as_a_module",
    "test_formats.py::test_each_format_runs_without_bottleneck_and_predicts_like_the_pipeline",
    "test_formats.py::test_int8_litert_is_smaller_integer_and_still_gives_probabilities",
    "test_formats.py::test_predict_takes_every_format_and_gives_the_same_rows",
    "test_formats.py::test_saved_model_force_replaces_only_a_saved_model",
    "test_formats.py::test_a_saved_model_that_writes_files_is_refused_before_it_loads",
    "test_formats.py::test_an_onnx_model_with_outside_data_is_refused",
    "test_formats.py::test_a_litert_graph_that_cannot_run_is_a_clear_error",
    "test_formats.py::test_segmentation_exports_to_every_format_and_predict_scores_the_runs_miou",
    "test_formats.py::test_predict_writes_segmentation_masks_and_refuses_them_for_other_models",
    "test_tasks.py::test_multilabel_heads_learn_and_decode",
    "test_tasks.py::test_a_mixed_range_regression_head",
    "test_tasks.py::test_regression_heads_learn_bounded_outputs",
    "test_tasks.py::test_thresholds_are_tuned_on_the_validation_part_only",
    "test_feed.py::test_ahead_keeps_depth_in_flight_hands_futures_in_order_and_stops_on_close",
    "test_feed.py::test_ahead_holds_back_more_than_first_until_the_first_chunk_is_made",
    "test_weights.py::test_weights_dir_file_loads_and_wrong_hash_refuses",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = f"{item.path.name}::{item.originalname}"
        if name in SUBPROCESS or item.path.name == "test_fuzz.py":  # (each format fuzzed in a child process)
            item.add_marker(pytest.mark.subprocess)
        if item.path.name == "test_cluster.py":
            item.add_marker(pytest.mark.ray)
        if name in SLOW or item.get_closest_marker("subprocess") or item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.slow)
