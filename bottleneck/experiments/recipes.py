"""Named recipes: bundles of the settings that change what a run scores, asked for by name.

``plain`` is the classic lab's recipe. Each other recipe names the levers it pulls (a crop
before resizing, a head-parameter search, augmented views, stacked features); each lever is
an ordinary, recorded setting, so a recipe's rows are fingerprinted like any other run, and
``compare --recipes plain,best`` shows what a recipe buys against the plain one in one table
(rows carry ``recipe``).
"""
from __future__ import annotations

import dataclasses

from bottleneck.core.errors import BottleneckError, nearest


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    crop: float | None = None  # crop to the box (margin), on datasets that give boxes (GTSRB)
    head_params: tuple = ()  # (name, value) pairs for the head, e.g. (("C", "cv"),)
    views: int | None = None  # views of each training image (augment.py)
    test_views: int | None = None  # views of each test image, their features averaged
    stack: tuple = ()  # parts stacked beside the base's features (stacking.py), e.g. (":stage6",)
    test_mirror: bool = False  # score each test image with its mirror image, where every class is itself in one
    unlabeled: int | str | None = None  # unlabeled images per class learnt from ("all": the rest of the split)

    @property
    def features_levers(self) -> bool:
        """Whether it changes the features (not only the head)."""
        return bool(self.crop is not None or self.views or self.test_views or self.stack or self.test_mirror)


RECIPES = {r.name: r for r in (
    Recipe("plain", "the whole image resized to the base's size; the target's default head as it is "
                    "(logreg with C=1): the classic lab's recipe"),
    Recipe("crop", "each image cropped to its sign box (GTSRB's CSVs) grown by 10% a side before resizing; "
                   "the same as plain on datasets without boxes", crop=0.1),
    Recipe("tuned", "logreg's C chosen by 5-fold cross-validation on the training draw only (whole groups, "
                    "e.g. GTSRB's tracks, per fold; seeded)", head_params=(("C", "cv"),)),
    Recipe("views", "4 views of each training image (itself and 3 seeded crops, mirror images where the class "
                    "allows, colour changes), each a cached row; each test image scored on the mean of 2 views "
                    "(itself and its mirror image where any class may be mirrored, else a seeded crop)",
           views=4, test_views=2),
    Recipe("spatial", "the base's stage-5 map (stride 16) pooled per cell of a 4 x 4 grid, beside its pooled "
                      "features: where a sign's parts are, which one global average forgets", stack=(":stage5:grid4",)),
    Recipe("wide", "efficientnet_lite1's and efficientnet_lite2's pooled features beside the base's (other "
                   "bases, each at its own size)", stack=("efficientnet_lite1", "efficientnet_lite2")),
    Recipe("best", "crop (where there are boxes), spatial and wide together; for one class per image, each test "
                   "image scored with its mirror image where every class is itself in a mirror (CIFAR-10, not "
                   "signs) and logreg's C by 3-fold cross-validation on the training draw: the best measured on "
                   "CIFAR-10 and GTSRB (README, Accuracy)", crop=0.1, head_params=(("C", "cv"), ("cv_folds", 3)),
           stack=(":stage5:grid4", "efficientnet_lite1", "efficientnet_lite2"), test_mirror=True),
)}
RECIPES["best-grids"] = dataclasses.replace(
    RECIPES["best"], name="best-grids", stack=RECIPES["best"].stack + (
        ":stage4:grid4", "efficientnet_lite1:stage5:grid4", "efficientnet_lite2:stage5:grid4"),
    description="best, and three more 4 x 4 grids beside it: the base's stage-4 map and efficientnet_lite1's and "
                "efficientnet_lite2's stage-5 maps (finer parts of a sign, seen by three bases); for signs: on GTSRB "
                "(3 seeds) 0.908 -> 0.920 with 100 labels a class, 0.920 -> 0.926 with every unlabeled image too "
                "(0.929 with the pseudo head's scale_C); on CIFAR-10 (seed 0) 0.792 against best's 0.796")
RECIPES["best-semi"] = dataclasses.replace(
    RECIPES["best"], name="best-semi", unlabeled="all",
    description="best, and its head also learns from every other image of the training split without its label "
                "(--unlabeled all, by the best measured semi-supervised method unless --semi names one)")


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise BottleneckError(f"unknown recipe {name!r}{nearest(name, list(RECIPES))}",
                              f"use one of {', '.join(RECIPES)} (`bottleneck recipes` says what each does)")
    return RECIPES[name]


def apply(name: str, has_boxes: bool, head: str, plan_kwargs: dict, head_params: dict,
          mirrors: bool = False, single_label: bool = True) -> tuple[dict, dict]:
    """The plan keywords and head parameters of a run made with recipe ``name`` and ``head``
    on a dataset that gives boxes or not, and whose classes are all themselves in a mirror
    (``mirrors``) or not, for a target of one class per image or another (``single_label``:
    the C search and the test mirror are for one class; the rest of a recipe serves every
    target). A setting given explicitly as well is an error, never silently overridden."""
    recipe = get_recipe(name)
    plan_kwargs, head_params = dict(plan_kwargs), dict(head_params)
    if recipe.test_mirror and mirrors and single_label:  # test view 1 is the mirror image there (augment.Views)
        recipe = dataclasses.replace(recipe, test_views=2)
    if not single_label and recipe.head_params and recipe.features_levers:
        recipe = dataclasses.replace(recipe, head_params=())  # its C search is one class's; its features serve all
    if recipe.head_params and head != "logreg":
        raise BottleneckError(f"recipe {name} tunes the logreg head; this run's head is {head}",
                              "use --head logreg with this recipe, or the crop/plain recipes")
    if recipe.crop is not None and has_boxes:
        if plan_kwargs.get("crop") is not None:
            raise BottleneckError(f"recipe {name} sets the crop, and --crop was given too", "drop one of them")
        plan_kwargs["crop"] = recipe.crop
    for key in ("views", "test_views", "stack"):
        value = getattr(recipe, key)
        if value:
            if plan_kwargs.get(key) and plan_kwargs.get(key) != 1:
                raise BottleneckError(f"recipe {name} sets --{key.replace('_', '-')}, and it was given too",
                                      "drop one of them")
            plan_kwargs[key] = value
    for key, value in recipe.head_params:
        if key in head_params:
            raise BottleneckError(f"recipe {name} sets the head's {key}, and it was given too", "drop one of them")
        head_params[key] = value
    return plan_kwargs, head_params


def unlabeled_of(name: str | None, unlabeled) -> int | str | None:
    """The run's unlabeled images: the recipe's, or those given (both is an error)."""
    mine = get_recipe(name).unlabeled if name is not None else None
    if mine is None:
        return unlabeled
    if unlabeled not in (None, 0):
        raise BottleneckError(f"recipe {name} sets --unlabeled {mine}, and --unlabeled {unlabeled} was given too",
                              "drop one of them")
    return mine
