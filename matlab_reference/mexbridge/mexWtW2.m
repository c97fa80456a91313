function varargout = mexWtW2(varargin)
% Octave stand-in for Kilosort2's mexWtW2 mex: pykilosort's kernel through mex_bridge.
varargout = cell(1, max(nargout, 1));
[varargout{:}] = mex_bridge('mexWtW2', nargout, varargin{:});
end
