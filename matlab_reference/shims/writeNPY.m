function writeNPY(var, filename)
% Stand-in for npy-matlab's writeNPY (used by rezToPhy): saves the array's class and size, and its
% values (or, above 100000 elements, the sha256 of its column-major bytes: the data of a Fortran-
% ordered .npy) to <filename>.mat, for tests to compare with the .npy files pykilosort writes.
cls = class(var); sz = size(var);
if numel(var) > 100000
  sha256 = hash('sha256', char(typecast(var(:), 'uint8'))');
  save('-v7', [filename '.mat'], 'cls', 'sz', 'sha256');
else
  value = var;
  save('-v7', [filename '.mat'], 'value', 'cls', 'sz');
end
end
