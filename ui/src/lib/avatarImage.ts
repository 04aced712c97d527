// Turns a picture file the user chose into a small data URI that fits the server's avatar limit.

/** The server keeps avatars of at most 16 KiB. */
export const MAX_AVATAR_BYTES = 16 * 1024;
const SIDE = 96;

export type AvatarResult = { ok: true; dataUri: string } | { ok: false; reason: 'too_big' | 'unreadable' };

export async function avatarFromFile(file: File): Promise<AvatarResult> {
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    return { ok: false, reason: 'unreadable' };
  }
  // Square crop from the middle, scaled down to SIDE×SIDE.
  const crop = Math.min(bitmap.width, bitmap.height);
  const canvas = document.createElement('canvas');
  canvas.width = SIDE;
  canvas.height = SIDE;
  const context = canvas.getContext('2d');
  if (!context) return { ok: false, reason: 'unreadable' };
  context.drawImage(bitmap, (bitmap.width - crop) / 2, (bitmap.height - crop) / 2, crop, crop, 0, 0, SIDE, SIDE);
  bitmap.close();
  for (const quality of [0.85, 0.7, 0.5, 0.35]) {
    const dataUri = canvas.toDataURL('image/jpeg', quality);
    if (dataUri.length <= MAX_AVATAR_BYTES) return { ok: true, dataUri };
  }
  return { ok: false, reason: 'too_big' };
}
