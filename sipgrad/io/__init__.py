"""Reading images and writing files safely."""

from sipgrad.io.atomic import atomic_write, write_json
from sipgrad.io.images import IMAGE_EXTENSIONS, find_images, load_image

__all__ = ["atomic_write", "write_json", "load_image", "find_images", "IMAGE_EXTENSIONS"]
