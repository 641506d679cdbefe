"""Reading images and writing files safely."""

from sipgrad.io.atomic import atomic_write
from sipgrad.io.images import IMAGE_EXTENSIONS, find_images, load_image

__all__ = ["atomic_write", "load_image", "find_images", "IMAGE_EXTENSIONS"]
