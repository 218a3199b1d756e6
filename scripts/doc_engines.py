"""The scripted engines the docs' examples run in place of llama.cpp: fixed answers, real code after them."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class SampleAnswerEngine:
    """Answers every image with conftest's sample answer (the red tee), as the real model would in shape."""

    def __init__(self, languages: tuple[str, ...]) -> None:
        from qvl_label.engine.protocol import EngineInfo
        from tests.conftest import sample_answer

        self.answer = json.dumps(sample_answer(languages), ensure_ascii=False)
        self.info = EngineInfo("sample-answer", "model.gguf", "mmproj.gguf", 4096, 1, 0, False, 8, 64, False, 1)

    def generate(self, requests: Iterable[Any]) -> Iterator[Any]:
        from qvl_label.engine.protocol import Generation, Idle, TokenCounts

        for request in requests:
            if not isinstance(request, Idle):
                yield Generation(key=request.key, text=self.answer, finish_reason="stop", tokens=TokenCounts())

    def cancel(self, key: int) -> None:
        pass

    def close(self) -> None:
        pass


FIXTURES = ROOT / "tests" / "fixtures"
APPAREL = {"template": "apparel", "neckline": "not visible", "sleeve_length": "not visible", "fit": "regular",
           "length": "not visible", "closure": "not visible"}  # fmt: skip
CARTON = {"template": "food", "package_type": "carton", "flavour": "", "net_content": "1 L"}
# A scripted model's answers for the ten photos gold.csv covers (photo: top level, path below it, colours,
# brand, English and Chinese name, details). They are inputs, written for the examples, not model output:
# mostly right, some less specific or off, as a small model's answers are, so the figures say something.
CATALOGUE_ANSWERS: dict[str, tuple[str, list[str], list[str], str, str, str, dict[str, str]]] = {
    "products/ms04-red_main.jpg": ("Apparel & Accessories", ["Clothing", "Shirts & Tops"], ["wine red"], "",
                                   "Men's red crew-neck tee", "男士酒红色圆领T恤", APPAREL),
    "products/wj04-white_main.jpg": ("Apparel & Accessories", ["Clothing", "Outerwear", "Coats & Jackets"],
                                     ["cream"], "", "Women's cream zip jacket", "女士米白色拉链夹克", APPAREL),
    "products/wb04-blue-0.jpg": ("Luggage & Bags", ["Backpacks"], ["blue"], "", "Blue sport backpack", "蓝色运动双肩包",
                                 {"template": "bags", "bag_type": "backpack", "strap": "two shoulder straps",
                                  "closure": "zip"}),
    "products/Arla-Standard-Milk_Iconic.jpg": ("Food, Beverages & Tobacco", ["Beverages", "Milk"], ["white", "blue"],
                                               "Arla", "Arla standard milk 1 L", "Arla 全脂牛奶 1升", CARTON),
    "products/Tropicana-Apple-Juice_001.jpg": ("Food, Beverages & Tobacco", ["Beverages", "Juice"], ["green"],
                                               "Tropicana", "Tropicana apple juice", "纯果乐苹果汁", CARTON),
    "catalogue/msh02-black_main.jpg": ("Apparel & Accessories", ["Clothing", "Shorts"], ["black"], "",
                                       "Men's black training shorts", "男士黑色运动短裤", APPAREL),
    "catalogue/wp07-blue_main.jpg": ("Apparel & Accessories", ["Clothing", "Pants"], ["navy"], "",
                                     "Women's navy yoga pants", "女士藏青色瑜伽裤", APPAREL),
    "catalogue/Bravo-Orange-Juice_Iconic.jpg": ("Food, Beverages & Tobacco", ["Beverages"], ["orange"], "Bravo",
                                                "Bravo orange juice", "Bravo 橙汁", CARTON),
    "catalogue/Oatly-Oat-Milk_Iconic.jpg": ("Food, Beverages & Tobacco", ["Beverages", "Milk"], ["blue"], "OATLY",
                                            "Oatly oat drink", "Oatly 燕麦奶", CARTON),
    "catalogue/Granny-Smith_Iconic.jpg": ("Food, Beverages & Tobacco", ["Food Items", "Fruits & Vegetables",
                                          "Fresh & Frozen Fruits", "Apples"], ["green"], "", "Granny Smith apples",
                                          "青苹果", {"template": "food", "package_type": "loose", "flavour": "",
                                                    "net_content": ""}),
}  # fmt: skip


def catalogue_answer(photo: str, languages: tuple[str, ...]) -> dict[str, Any]:
    from tests.conftest import sample_answer

    top, path, colors, brand, english, chinese, details = CATALOGUE_ANSWERS[photo]
    copy = {
        "en": {"title": english, "description": f"{english}, photographed on white.",
               "selling_points": [english, "Shown on white", "Ships from stock"],
               "tags": [english.split()[-1].lower(), "new"]},
        "zh": {"title": chinese, "description": f"{chinese}，白底拍摄。",
               "selling_points": [chinese, "白底实拍", "现货"], "tags": [chinese, "新品"]},
    }  # fmt: skip
    return sample_answer(
        languages,
        category={"top": top, "path": path},
        colors=colors,
        brand=brand,
        visible_text=[brand] if brand else [],
        details=details,
        copy={lang: copy[lang] for lang in languages},
        **({} if details is APPAREL else {key: [] for key in ("materials", "patterns", "style", "audience")}),
    )


class CatalogueEngine(SampleAnswerEngine):
    """Answers each fixture photo with its CATALOGUE_ANSWERS entry, told apart by the image it is sent."""

    def __init__(self, engine: Any) -> None:  # the run's EngineSettings: the image budget and model file
        from qvl_label.pipeline.images import load_image

        super().__init__(("en",))  # the languages come with each request
        self.info = dataclasses.replace(self.info, model_path=str(engine.model_path))
        low, high = engine.image_min_tokens, engine.image_max_tokens
        self.photos = {
            hashlib.sha256(load_image(FIXTURES / photo, low, high).prepared.rgb).digest(): photo
            for photo in CATALOGUE_ANSWERS
        }

    def generate(self, requests: Iterable[Any]) -> Iterator[Any]:
        from qvl_label.engine.protocol import Generation, Idle, TokenCounts

        for request in requests:
            if isinstance(request, Idle):
                continue
            photo = self.photos.get(hashlib.sha256(request.image.rgb).digest())
            if photo is None:
                yield Generation(key=request.key, text="", finish_reason="error", error="not a catalogue photo")
                continue
            languages = tuple(request.schema["properties"]["copy"]["required"])  # this request's languages
            text = json.dumps(catalogue_answer(photo, languages), ensure_ascii=False)
            yield Generation(key=request.key, text=text, finish_reason="stop", tokens=TokenCounts())


@contextlib.contextmanager
def engine_in_place(factory: Any) -> Iterator[None]:
    """Every Labeler the CLI opens gets this engine instead of llama.cpp's."""
    from qvl_label.pipeline.labeler import Labeler

    original_init = Labeler.__init__
    Labeler.__init__ = functools.partialmethod(original_init, engine_factory=factory)  # type: ignore[method-assign]
    try:
        yield
    finally:
        Labeler.__init__ = original_init  # type: ignore[method-assign]


class ProductAnswerEngine(SampleAnswerEngine):
    """The sample answer for single photos; for a product's photos, also their roles (the first the main one)."""

    def generate(self, requests: Iterable[Any]) -> Iterator[Any]:
        from qvl_label.engine.protocol import Generation, Idle, TokenCounts

        for request in requests:
            if isinstance(request, Idle):
                continue
            answer = json.loads(self.answer)
            roles = (request.schema or {}).get("properties", {}).get("photo_roles")
            if roles is not None:
                answer["photo_roles"] = ["main"] + ["detail"] * (roles["minItems"] - 1)
            text = json.dumps(answer, ensure_ascii=False)
            yield Generation(key=request.key, text=text, finish_reason="stop", tokens=TokenCounts())
